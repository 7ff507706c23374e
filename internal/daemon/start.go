package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"banger/api"
	"banger/internal/guestproto"
	"banger/internal/hostnet"
	"banger/internal/imagebuild"
	"banger/internal/initramfs"
	"banger/internal/kernelcat"
	"banger/internal/model"
	"banger/internal/vmm"
)

// A VM start is an ordered list of named steps (the Firecracker Go SDK's
// handler list). Each step's name is its progress stage; a step that
// creates something pushes its undo when it succeeds, and a failure runs
// the undos last-in-first-out and joins their errors (the SDK's
// doCleanup). New start paths (image init, shares, restore) are steps, not
// branches.
type startStep struct {
	name string
	// usesKey marks the steps from preparing disks (the work disk gets the
	// daemon's key) to agent-ready (dialled with that key): keyUseMu is
	// held shared across them, and only them, so a key rotation never
	// falls between the two and never waits for a kernel pull.
	usesKey bool
	// skip, when set, says the step does not apply (e.g. no guest network).
	skip func(r *startRun) bool
	// msg is the progress message.
	msg func(r *startRun) string
	run func(r *startRun, ctx context.Context) error
}

// startSteps are the steps of every start, in order.
var startSteps = []startStep{
	{name: "resolve_kernel", msg: func(r *startRun) string { return r.rec.Spec.Kernel }, run: (*startRun).resolve},
	{name: "prepare_initramfs", msg: func(r *startRun) string { return r.km.Name }, run: (*startRun).prepareInitramfs},
	{name: "prepare_modules", skip: (*startRun).noModules, msg: func(r *startRun) string { return r.km.ModulesRelease }, run: (*startRun).prepareModules},
	{name: "prepare_disks", usesKey: true, run: (*startRun).prepareDisks},
	{name: "network", usesKey: true, skip: (*startRun).noNetwork, run: (*startRun).attachNetwork},
	{name: "runtime_dir", usesKey: true, run: (*startRun).makeRuntimeDir},
	{name: "shares", skip: (*startRun).noShares, msg: (*startRun).sharesMsg, run: (*startRun).checkShares},
	{name: "boot", usesKey: true, msg: func(r *startRun) string { return r.drv.Name() }, run: (*startRun).boot},
	{name: "wait_ready", usesKey: true, msg: func(r *startRun) string { return "up to " + r.s.d.cfg.readyTimeout().String() }, run: (*startRun).waitReady},
	{name: "publish", skip: (*startRun).noNetwork, run: (*startRun).publish},
	// guest_setup: the VM's env and main process (mainproc.go).
	{name: "guest_setup", msg: (*startRun).setupMessage, run: (*startRun).setupGuest},
	{name: "provision", skip: (*startRun).noProvision, msg: func(r *startRun) string { return r.provisionMsg() }, run: (*startRun).provision},
}

// StartSteps names the steps in order (tests inject a failure at each).
func StartSteps() []string {
	names := make([]string, len(startSteps))
	for i, st := range startSteps {
		names[i] = st.name
	}
	return names
}

// startRun is one start of one VM: what its steps share.
type startRun struct {
	s    *VMService
	op   *operation
	rec  model.VMRecord
	prev model.VMState // the state before this start, restored if no VMM ran

	drv    vmm.Driver
	caps   vmm.Capabilities
	km     *kernelcat.Manifest
	img    model.Image
	initrd string
	tap    string
	rtDir  string
	spec   vmm.Spec
	h      vmm.Handle
	// vmmRan: a VMM was started, so a failure leaves the VM in state error
	// with its files (console) kept for `vm logs`.
	vmmRan bool
	// modules is the kernel's modules disk, "" when it has none.
	modules string

	undos []undo
	// keyHeld: this run holds keyUseMu shared (holdKey, releaseKey).
	keyHeld bool

	// snap is the snapshot a restore starts from (restore.go); nil for a
	// cold boot. incoming is its state, open while the VMM loads it.
	snap     *model.Snapshot
	incoming *os.File
	// lv is the live VM once wait_ready registered it.
	lv *liveVM

	// warm: a create that may start warm (warm.go). When warm_lookup
	// found the shape's snapshot, snap is it and unpin releases it;
	// takeWarm is the slot this cold boot fills at agent-ready, with the
	// inputs to record.
	warm       bool
	unpin      func()
	takeWarm   string
	warmInputs string
}

func (r *startRun) holdKey() {
	if !r.keyHeld {
		r.s.d.keyUseMu.RLock()
		r.keyHeld = true
	}
}

func (r *startRun) releaseKey() {
	if r.keyHeld {
		r.s.d.keyUseMu.RUnlock()
		r.keyHeld = false
	}
}

type undo struct {
	step string
	fn   func(ctx context.Context) error
}

func (r *startRun) push(step string, fn func(ctx context.Context) error) {
	r.undos = append(r.undos, undo{step, fn})
}

// undoTimeout bounds the whole unwinding of a failed start.
const undoTimeout = 60 * time.Second

// startLocked boots rec.
//
// caller holds s.vmLocks[rec.ID]. startLocked takes keyUseMu shared for the usesKey steps only, from
// prepare_disks to wait_ready (lock order: VM lock, then keyUseMu); a
// failure there unwinds before it is released.
func (s *VMService) startLocked(ctx context.Context, op *operation, rec model.VMRecord) (model.VMRecord, error) {
	if isActive(rec.State) {
		return rec, api.Errorf(api.KindConflict, "VM %q is already %s", rec.Name, rec.State)
	}
	return s.runStart(ctx, &startRun{s: s, op: op, rec: rec, prev: rec.State}, startSteps)
}

// runStart runs steps for r (a cold boot's startSteps, a restore's
// restoreSteps), unwinding on the first failure, and records the VM
// running at the end.
//
// caller holds s.vmLocks[r.rec.ID].
func (s *VMService) runStart(ctx context.Context, r *startRun, steps []startStep) (model.VMRecord, error) {
	op := r.op
	defer r.releaseKey()
	for i, st := range steps {
		if st.skip != nil && st.skip(r) {
			continue
		}
		// From disks to agent-ready one key is in use; rotation waits
		// (see rotateKey).
		if st.usesKey {
			r.holdKey()
		} else {
			r.releaseKey()
		}
		msg := ""
		if st.msg != nil && (i == 0 || r.drv != nil) {
			msg = st.msg(r)
		}
		op.stage(st.name, msg)
		err := callerGone(ctx)
		if err == nil {
			err = st.run(r, ctx)
		}
		if err == nil && s.d.startHook != nil {
			err = s.d.startHook(st.name)
		}
		if err != nil {
			return r.fail(ctx, st.name, err)
		}
	}
	// A caller that hung up while the last step ran gets no running VM it
	// does not know about: unwind, as for any failed step.
	if err := callerGone(ctx); err != nil {
		return r.fail(ctx, "running", err)
	}
	r.rec.State = model.StateRunning
	r.rec.Runtime.StartedAt = time.Now().UTC()
	if err := s.d.store.UpdateVM(ctx, r.rec); err != nil {
		return r.fail(ctx, "running", fmt.Errorf("record state running: %w", err))
	}
	s.d.vmEvent("start", r.rec, nil)
	return r.rec, nil
}

// fail unwinds a start that failed at step: the undos, last first, then the
// record — state error (files kept) when a VMM ran, else the state it had.
func (r *startRun) fail(ctx context.Context, step string, cause error) (model.VMRecord, error) {
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
	defer cancel()
	var undoErrs []error
	for i := len(r.undos) - 1; i >= 0; i-- {
		if err := r.undos[i].fn(uctx); err != nil {
			undoErrs = append(undoErrs, fmt.Errorf("undo %s: %w", r.undos[i].step, err))
		}
	}
	rec := r.rec
	rec.State = r.prev
	if r.vmmRan {
		rec.State = model.StateError
	}
	rec.Runtime.PID, rec.Runtime.VMMState, rec.Runtime.Tap = 0, nil, ""
	rec.Runtime.LastError = fmt.Sprintf("%s: %v", step, cause)
	if err := r.s.d.store.UpdateVM(uctx, rec); err != nil {
		undoErrs = append(undoErrs, fmt.Errorf("record the failure: %w", err))
	}
	if err := errors.Join(undoErrs...); err != nil {
		r.op.log.Warn("cleanup after failed start", "step", step, "err", err)
		cause = fmt.Errorf("%w (cleanup: %v)", cause, err)
	}
	if !r.vmmRan {
		return rec, fmt.Errorf("start VM %q: %s: %w", rec.Name, step, cause)
	}
	if step == "provision" {
		// The script's last lines are in cause; the console has them too.
		return rec, api.Errorf(api.KindUnavailable, "VM %q: first-boot provisioning failed: %w\n(the VM is left in state error; `banger vm logs %s` has the whole output)", rec.Name, cause, rec.Name)
	}
	msg := fmt.Sprintf("VM %q failed to boot (%s): %%w", rec.Name, step)
	if tail := strings.TrimSpace(vmm.Tail(r.spec.Console(), consoleTail)); tail != "" {
		msg += "\n--- last lines of the console (banger vm logs " + rec.Name + ") ---\n" + tail
	}
	return rec, api.Errorf(api.KindUnavailable, msg, cause)
}

// callerGone is the error of a start whose ctx ended (its caller hung up,
// or the daemon is shutting down), with the cause, else nil. Checked
// between steps so that no step begins for a caller that is gone.
func callerGone(ctx context.Context) error {
	if ctx.Err() == nil {
		return nil
	}
	return fmt.Errorf("cancelled: %w", context.Cause(ctx))
}

func (r *startRun) noNetwork() bool { return r.caps.Network != vmm.NetworkTap }

// resolve picks the driver and checks the VM against its capabilities,
// then finds (or auto-pulls) the kernel and the image.
func (r *startRun) resolve(ctx context.Context) error {
	drv, err := r.s.d.driverFor()
	if err != nil {
		return err
	}
	r.drv, r.caps = drv, drv.Capabilities()
	if err := checkCapabilities(r.caps, drv.Name(), r.rec.Spec); err != nil {
		return err
	}
	// Then the host's (hostres.go): memory now, the disks not made yet.
	if err := checkHostMemory(r.rec.Spec.MemoryMiB); err != nil {
		return err
	}
	if err := checkHostDisk(r.s.d.cfg.StateDir, newDiskSizes(r.rec.Spec, r.rec.Runtime.Dir)); err != nil {
		return err
	}
	if r.km, err = r.s.d.kernels.readOrAutoPullKernel(ctx, r.rec.Spec.Kernel); err != nil {
		return err
	}
	if !bootable(r.caps, r.km) {
		return api.Errorf(api.KindInvalidArgument, "kernel %q has no %s image, the format the %s hypervisor boots: pick another --kernel",
			r.km.Name, strings.Join(r.caps.KernelFormats, " or "), drv.Name())
	}
	if r.img, err = r.s.d.store.GetImage(ctx, r.rec.Spec.ImageID); err != nil {
		return api.Errorf(api.KindNotFound, "image %q of VM %q is gone: recreate the VM (%w)", r.rec.Spec.Image, r.rec.Name, err)
	}
	return nil
}

// checkCapabilities is the one check of a VM's spec against a driver's
// limits, used before a reservation (validateCreate) and at every start.
func checkCapabilities(c vmm.Capabilities, driver string, spec model.VMSpec) error {
	if err := c.CheckLimits(spec.VCPU, spec.MemoryMiB); err != nil {
		return api.Errorf(api.KindInvalidArgument, "%s (%s)", err, driver)
	}
	if c.Network != vmm.NetworkTap && (spec.NAT || len(spec.Ports) > 0) {
		return api.Errorf(api.KindInvalidArgument, "the %s hypervisor gives guests no network device: --nat and -p are not available", driver)
	}
	if len(spec.Shares) > 0 && !c.Shares {
		return api.Errorf(api.KindInvalidArgument, "-v %s:%s: %s (%s)", spec.Shares[0].HostPath, spec.Shares[0].GuestPath, c.NoShares, driver)
	}
	return nil
}

func bootable(c vmm.Capabilities, km *kernelcat.Manifest) bool {
	return c.Boots(vmm.KernelBzImage) && km.Kernel != "" || c.Boots(vmm.KernelVmlinux) && km.Vmlinux != ""
}

func (r *startRun) prepareInitramfs(ctx context.Context) error {
	initBin, err := initramfs.LocateInit()
	if err != nil {
		return api.Errorf(api.KindUnavailable, "%w", err)
	}
	r.initrd, err = initramfs.Ensure(ctx, initBin, kernelcat.Dir(r.s.d.kernels.dir, r.km.Name), r.km.Modules)
	if err != nil {
		return fmt.Errorf("build initramfs for kernel %q: %w", r.km.Name, err)
	}
	return nil
}

// noModules: a kernel with everything built in, or one pulled before
// modules disks existed, keeps no module tree; its VMs boot with the
// initramfs's boot modules only.
func (r *startRun) noModules() bool { return r.km.ModulesTree == "" }

// prepareModules finds (or, if it went missing, rebuilds) the kernel's
// modules disk. No undo: the disk is the kernel's, shared read-only by
// every VM that boots it, and cached across starts.
func (r *startRun) prepareModules(ctx context.Context) error {
	p, err := kernelcat.EnsureModulesDisk(ctx, kernelcat.Dir(r.s.d.kernels.dir, r.km.Name), r.km)
	if err != nil {
		return err
	}
	r.modules = p
	return nil
}

// prepareDisks has no undo: the disks live in the VM's directory, which a
// failed create removes with its reservation and a failed start keeps (the
// work disk is the user's).
func (r *startRun) prepareDisks(ctx context.Context) error {
	return r.s.prepareDisks(ctx, &r.rec, r.img)
}

func (r *startRun) attachNetwork(ctx context.Context) error {
	// A restored guest starts with its source's addresses: its tap stays
	// off the bridge until the identity step (joinNetwork).
	tap, err := r.s.d.net.attach(r.rec, r.snap != nil)
	if err != nil {
		return err
	}
	r.tap = tap
	r.rec.Runtime.Tap = tap
	rec := r.rec
	r.push("network", func(context.Context) error { return r.s.d.net.detach(rec) })
	return nil
}

func (r *startRun) makeRuntimeDir(ctx context.Context) error {
	r.rtDir = r.s.vmRuntimeDir(r.rec.ID)
	os.RemoveAll(r.rtDir) // stale sockets from a previous boot
	if err := os.MkdirAll(r.rtDir, 0o700); err != nil {
		return fmt.Errorf("create runtime dir: %w", err)
	}
	r.push("runtime_dir", func(context.Context) error { return os.RemoveAll(r.rtDir) })
	return nil
}

// vmSpec is what the driver boots.
func (r *startRun) vmSpec() vmm.Spec {
	rec, km := r.rec, r.km
	ip := netip.MustParseAddr(rec.Runtime.GuestIP)
	bridge := r.s.d.cfg.BridgePrefix()
	gc := guestproto.Config{Hostname: rec.Name, Agent: r.caps.Agent, Time: time.Now(), Init: initModeOf(rec.Spec)}
	spec := vmm.Spec{
		ID: rec.ID, Name: rec.Name, Dir: rec.Runtime.Dir, RuntimeDir: r.rtDir,
		VCPU: rec.Spec.VCPU, MemoryMiB: rec.Spec.MemoryMiB, Initrd: r.initrd,
		MMIOCmdline: km.Boot == kernelcat.BootMMIO,
		Balloon:     r.balloon(),
		// In guestproto's order (vda, vdb, vdc, vdd), with serials where
		// the driver can set them.
		Disks: []vmm.Disk{
			{Path: filepath.Join(r.img.Dir, imagebuild.RootfsName), ReadOnly: true, Serial: guestproto.SerialRootfs},
			{Path: filepath.Join(rec.Runtime.Dir, cowName), Serial: guestproto.SerialCow},
			{Path: filepath.Join(rec.Runtime.Dir, workDiskName), Serial: guestproto.SerialWork},
		},
		CID: hostnet.DefaultVSockCID(ip.AsSlice()),
	}
	if r.modules != "" {
		spec.Disks = append(spec.Disks, vmm.Disk{Path: r.modules, ReadOnly: true, Serial: guestproto.SerialModules})
		gc.Modules = km.ModulesRelease
	}
	if km.Kernel != "" {
		spec.Kernel = km.Path(r.s.d.kernels.dir, km.Kernel)
	}
	if km.Vmlinux != "" {
		spec.Vmlinux = km.Path(r.s.d.kernels.dir, km.Vmlinux)
	}
	for i, sh := range rec.Spec.Shares {
		tag := model.ShareTag(i)
		spec.Shares = append(spec.Shares, vmm.Share{Tag: tag, HostPath: sh.HostPath, ReadOnly: sh.ReadOnly, UID: sh.UID, GID: sh.GID, Groups: sh.Groups})
		gc.Shares = append(gc.Shares, guestproto.ShareMount{Transport: r.caps.ShareTransport, Tag: tag, ReadOnly: sh.ReadOnly, Path: sh.GuestPath})
	}
	if r.tap != "" {
		gc.IP, gc.Gateway, gc.DNS = netip.PrefixFrom(ip, bridge.Bits()), bridge.Addr(), []netip.Addr{bridge.Addr()}
		spec.Net = &vmm.NetConfig{Tap: r.tap, MAC: hostnet.MACFromIP(ip.AsSlice())}
	}
	spec.Cmdline = strings.Join(gc.Args(), " ")
	return spec
}

// balloon: a restore keeps the saved VM's device layout; a boot gets a
// free page reporting balloon where the driver offers one, unless the VM
// has shares: a VMM's device slots are few (QEMU's microvm without ACPI
// has 8 virtio-mmio transports, which four disks, the NIC, the agent and
// two shares fill), and a VM with shares is never snapshotted or warm.
func (r *startRun) balloon() bool {
	if r.snap != nil {
		return r.snap.Balloon
	}
	return r.caps.FreePageReporting && len(r.rec.Spec.Shares) == 0
}

// boot records the VM as starting and spawns its VMM; the undo kills it.
func (r *startRun) boot(ctx context.Context) error {
	r.spec = r.vmSpec()
	r.spec.Incoming = r.incoming
	// A fresh console per boot, so the tail in an error is this boot's.
	os.Remove(r.spec.Console())
	r.rec.State = model.StateStarting
	r.rec.Runtime.CID, r.rec.Runtime.VMM, r.rec.Runtime.LastError = r.spec.CID, r.drv.Name(), ""
	r.rec.Runtime.Balloon = r.spec.Balloon
	r.rec.Runtime.MAC = ""
	r.rec.Runtime.MainExit, r.rec.Runtime.Init, r.rec.Runtime.InitPath = nil, "", ""
	r.rec.Runtime.Start = model.StartCold
	if r.incoming != nil {
		r.rec.Runtime.Start = model.StartSnapshot
		if r.warm {
			r.rec.Runtime.Start = model.StartWarm
		}
	}
	if r.spec.Net != nil {
		r.rec.Runtime.MAC = r.spec.Net.MAC
	}
	if err := r.s.d.store.UpdateVM(ctx, r.rec); err != nil {
		return fmt.Errorf("record state starting: %w", err)
	}
	r.vmmRan = true
	h, err := r.drv.Start(ctx, r.spec)
	if err != nil {
		return fmt.Errorf("start %s: %w", r.drv.Name(), err)
	}
	r.h = h
	r.push("boot", func(context.Context) error { return h.Kill() })
	st, err := h.State()
	if err != nil {
		return fmt.Errorf("VMM state: %w", err)
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	r.rec.Runtime.VMMState, r.rec.Runtime.PID = b, h.PID()
	if err := r.s.d.store.UpdateVM(ctx, r.rec); err != nil {
		return fmt.Errorf("record the VMM process: %w", err)
	}
	return nil
}

// waitReady waits for the agent, then registers the VM as live (monitored).
func (r *startRun) waitReady(ctx context.Context) error {
	client, err := r.s.waitReady(ctx, r.rec, r.h)
	if err != nil {
		return err
	}
	// The clock before anything else runs in the guest: the boot took
	// seconds since banger.time= was written. A restored guest gets it
	// with its identity, the next step.
	if r.snap == nil {
		r.s.setGuestClock(ctx, r.rec.Name, client)
	}
	lv := &liveVM{handle: r.h, done: make(chan struct{}), agent: client}
	r.lv = lv
	r.s.watch(r.rec.ID, lv)
	r.s.keepClock(r.rec.ID, lv, false)
	r.push("wait_ready", func(context.Context) error {
		r.s.dropLive(r.rec.ID, lv)
		lv.closeAgent()
		return nil
	})
	return nil
}

// publish makes the VM reachable: DNS record, NAT membership, forwards.
func (r *startRun) publish(ctx context.Context) error {
	rec := r.rec
	r.push("publish", func(ctx context.Context) error { r.s.d.net.vmDown(ctx, rec); return nil })
	return r.s.d.net.vmUp(ctx, rec)
}
