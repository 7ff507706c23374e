package daemon

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"banger/api"
	"banger/internal/disk"
	"banger/internal/guestproto"
	"banger/internal/model"
	"banger/internal/vmm"
)

// A restore is a start path of its own: a new VM (its own id, name, IP,
// tap, directory) whose VMM loads a snapshot's state instead of booting,
// on copies of the snapshot's disks, then takes a new identity before it
// meets anyone. Its steps share the cold boot's where they are the same
// (initramfs, modules disk, runtime dir, the VMM spawn, wait_ready,
// publish) and have undos like them.
//
// The restored guest wakes up as its source: same hostname, address and
// MAC in memory, same host key. So its tap is created off the bridge
// (network), the agent is checked against the source's host key
// (copy_disks brings its known_hosts), the identity step gives it its own
// (guestproto.IdentityRequest) and pins the new host key, and only then
// does join_network put the tap on the bridge. There is no guest_setup:
// the env and the main process are in the restored memory.
var restoreSteps = []startStep{
	{name: "resolve_snapshot", msg: func(r *startRun) string { return r.snap.Name }, run: (*startRun).resolveSnapshot},
	{name: "prepare_initramfs", msg: func(r *startRun) string { return r.km.Name }, run: (*startRun).prepareInitramfs},
	{name: "prepare_modules", skip: (*startRun).noModules, msg: func(r *startRun) string { return r.km.ModulesRelease }, run: (*startRun).prepareModules},
	{name: "copy_disks", usesKey: true, msg: func(r *startRun) string { return r.snap.Name }, run: (*startRun).copySnapshotDisks},
	{name: "network", usesKey: true, skip: (*startRun).noNetwork, run: (*startRun).attachNetwork},
	{name: "runtime_dir", usesKey: true, run: (*startRun).makeRuntimeDir},
	{name: "restore", usesKey: true, msg: func(r *startRun) string { return r.drv.Name() }, run: (*startRun).restoreVMM},
	{name: "wait_ready", usesKey: true, msg: func(r *startRun) string { return "up to " + r.s.d.cfg.readyTimeout().String() }, run: (*startRun).waitReady},
	{name: "identity", usesKey: true, run: (*startRun).newIdentity},
	{name: "join_network", skip: (*startRun).noNetwork, run: (*startRun).joinNetwork},
	{name: "publish", skip: (*startRun).noNetwork, run: (*startRun).publish},
}

// RestoreSteps names the restore's steps in order (tests inject a failure
// at each).
func RestoreSteps() []string {
	names := make([]string, len(restoreSteps))
	for i, st := range restoreSteps {
		names[i] = st.name
	}
	return names
}

// restoreLocked starts rec from sn. caller holds s.vmLocks[rec.ID].
func (s *VMService) restoreLocked(ctx context.Context, op *operation, rec model.VMRecord, sn model.Snapshot) (model.VMRecord, error) {
	if isActive(rec.State) {
		return rec, api.Errorf(api.KindConflict, "VM %q is already %s", rec.Name, rec.State)
	}
	return s.runStart(ctx, &startRun{s: s, op: op, rec: rec, prev: rec.State, snap: &sn}, restoreSteps)
}

// resolveSnapshot checks that this daemon can load the snapshot: a driver
// with snapshots, the same driver and device layout it was taken with,
// the same kernel release, and its image still there.
func (r *startRun) resolveSnapshot(ctx context.Context) error {
	drv, err := r.s.d.driverFor()
	if err != nil {
		return err
	}
	caps := drv.Capabilities()
	sn := r.snap
	if !caps.Snapshots {
		return api.Errorf(api.KindUnavailable, "%v: %s", vmm.ErrNoSnapshots, caps.NoSnapshots)
	}
	// Compatibility of the saved state, not a branch on the driver: a
	// state is in one VMM's format.
	if sn.VMM != drv.Name() || sn.Agent != caps.Agent || sn.Network != (caps.Network == vmm.NetworkTap) {
		return api.Errorf(api.KindInvalidArgument, "snapshot %q was taken with the %s hypervisor (agent %s, network %v); this daemon runs %s (agent %s, network %s)",
			sn.Name, sn.VMM, sn.Agent, sn.Network, drv.Name(), caps.Agent, caps.Network)
	}
	r.drv, r.caps = drv, caps
	if err := checkCapabilities(caps, drv.Name(), r.rec.Spec); err != nil {
		return err
	}
	if r.km, err = r.s.d.kernels.readOrAutoPullKernel(ctx, r.rec.Spec.Kernel); err != nil {
		return err
	}
	if r.km.Release != sn.KernelRelease {
		return api.Errorf(api.KindConflict, "kernel %q is release %s now, the snapshot %q ran %s: its memory cannot run on another kernel",
			r.km.Name, r.km.Release, sn.Name, sn.KernelRelease)
	}
	if r.img, err = r.s.d.store.GetImage(ctx, r.rec.Spec.ImageID); err != nil {
		return api.Errorf(api.KindNotFound, "image %q of snapshot %q is gone: the snapshot cannot be restored (%w)", r.rec.Spec.Image, sn.Name, err)
	}
	return nil
}

// copySnapshotDisks makes the new VM's disks copies of the snapshot's
// (reflinks where the filesystem has them) and brings the source's
// known_hosts, which the restored guest's host key matches until the
// identity step. No undo: the VM's directory goes with a failed create.
func (r *startRun) copySnapshotDisks(ctx context.Context) error {
	for _, n := range []string{cowName, workDiskName} {
		if err := disk.CloneSparse(filepath.Join(r.snap.Dir, n), filepath.Join(r.rec.Runtime.Dir, n)); err != nil {
			return fmt.Errorf("copy the snapshot's %s: %w", n, err)
		}
	}
	b, err := os.ReadFile(filepath.Join(r.snap.Dir, knownHostsName))
	if err != nil {
		return fmt.Errorf("the snapshot's host key: %w", err)
	}
	return disk.WriteFileAtomic(filepath.Join(r.rec.Runtime.Dir, knownHostsName), b, 0o600)
}

// restoreVMM starts the VMM on the snapshot's state (boot, with
// Spec.Incoming): the same spec a boot gets, so the same device layout.
func (r *startRun) restoreVMM(ctx context.Context) error {
	f, err := os.Open(filepath.Join(r.snap.Dir, snapStateName))
	if err != nil {
		return fmt.Errorf("the snapshot's state: %w", err)
	}
	defer f.Close()
	r.incoming = f
	defer func() { r.incoming = nil }()
	if err := r.boot(ctx); err != nil {
		return err
	}
	r.rec.Runtime.Init, r.rec.Runtime.InitPath = r.snap.Init, r.snap.InitPath
	return nil
}

// identityEntropy is how many random bytes the host pushes into a
// restored guest's pool.
const identityEntropy = 64

// newIdentity gives the restored guest its own hostname, address, MAC,
// host key, machine id, clock and random state, and pins its new host key
// in the VM's known_hosts.
func (r *startRun) newIdentity(ctx context.Context) error {
	rec := r.rec
	c, err := r.s.agentClient(ctx, rec, r.lv)
	if err != nil {
		return err
	}
	id := guestproto.Identity{Hostname: rec.Name, Time: time.Now(), Entropy: make([]byte, identityEntropy)}
	if _, err := rand.Read(id.Entropy); err != nil {
		return err
	}
	if r.spec.Net != nil {
		bridge := r.s.d.cfg.BridgePrefix()
		ip := netip.MustParseAddr(rec.Runtime.GuestIP)
		id.IP, id.Gateway, id.DNS = netip.PrefixFrom(ip, bridge.Bits()), bridge.Addr(), []netip.Addr{bridge.Addr()}
		id.MAC = r.spec.Net.MAC
	}
	reply, err := c.Identity(ctx, id)
	if err != nil {
		return api.Errorf(api.KindUnavailable, "give the restored guest its identity: %w", err)
	}
	key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(reply.HostKey))
	if err != nil {
		return fmt.Errorf("the guest's new host key: %w", err)
	}
	line := knownhosts.Line([]string{rec.Name, rec.Runtime.GuestIP, rec.DNSName()}, key) + "\n"
	// The connection in use stays: it was authenticated with the source's
	// key, which this guest held, and the key it now reports came over
	// that connection. Every later connection (the daemon's after a
	// restart, `vm ssh`, OpenSSH through ssh-config) must meet the new
	// key. Reconnecting here to prove it cost a second handshake (~280 ms
	// of a ~1.2 s warm start under TCG) and proved nothing the next
	// connection does not.
	return disk.WriteFileAtomic(filepath.Join(rec.Runtime.Dir, knownHostsName), []byte(line), 0o600)
}

// joinNetwork puts the restored guest's tap on the bridge, now that the
// guest has its own addresses.
func (r *startRun) joinNetwork(ctx context.Context) error { return r.s.d.net.joinBridge(r.tap) }

// createFromSnapshot is vm.create --from: resolve the snapshot, reserve
// a VM with the snapshot's spec, restore it under the VM's lock.
func (s *VMService) createFromSnapshot(ctx context.Context, p api.VMCreateParams) (model.VMRecord, error) {
	op := s.d.beginOperation(ctx, "vm.create", "name", p.Name, "from", p.From)
	if err := validateFrom(p); err != nil {
		return model.VMRecord{}, op.fail(err)
	}
	op.stage("resolve_snapshot", p.From)
	sn, err := s.findSnapshot(ctx, p.From)
	if err != nil {
		return model.VMRecord{}, op.fail(err)
	}
	return s.createFrom(ctx, op, p, sn)
}

// createFrom reserves and restores a new VM from sn (published, or a
// fork's unpublished one), pinned against removal meanwhile.
func (s *VMService) createFrom(ctx context.Context, op *operation, p api.VMCreateParams, sn model.Snapshot) (model.VMRecord, error) {
	req := createRequest{name: p.Name, spec: sn.Spec}
	if req.name != "" {
		if err := model.ValidateVMName(req.name); err != nil {
			return model.VMRecord{}, op.fail(api.Errorf(api.KindInvalidArgument, "%v", err))
		}
	}
	// The machine is the snapshot's; what is the host's (its NAT, its
	// ports, which the source may hold) is the create's.
	req.spec.NAT = p.NAT
	ports, err := parsePorts(p.Ports)
	if err != nil {
		return model.VMRecord{}, op.fail(err)
	}
	req.spec.Ports = ports
	if err := checkPortsFor(ctx, req.spec.Ports); err != nil {
		return model.VMRecord{}, op.fail(err)
	}
	// Labels, TTL and idle stop are the create's too, not the source's.
	if err := applyCreateOwn(p, &req.spec); err != nil {
		return model.VMRecord{}, op.fail(err)
	}
	if c := callerOf(ctx); c.known {
		req.spec.OwnerUID = int(c.UID)
	}
	if drv := s.d.driver; drv != nil {
		if err := checkCapabilities(drv.Capabilities(), drv.Name(), req.spec); err != nil {
			return model.VMRecord{}, op.fail(err)
		}
	}
	unpin, err := s.useSnapshot(sn)
	if err != nil {
		return model.VMRecord{}, op.fail(err)
	}
	defer unpin()
	op.stage("reserve_vm", req.name)
	rec, err := s.reserveVM(ctx, req)
	if err != nil {
		return model.VMRecord{}, op.fail(err)
	}
	op.setVM(rec)
	return s.bootReserved(ctx, op, rec, func(ctx context.Context, op *operation, rec model.VMRecord) (model.VMRecord, error) {
		return s.restoreLocked(ctx, op, rec, sn)
	})
}

// validateFrom: with --from the machine is the snapshot's, so every field
// that shapes a machine is refused rather than silently ignored.
func validateFrom(p api.VMCreateParams) error {
	var bad []string
	for _, f := range []struct {
		set  bool
		flag string
	}{
		{p.Image != "", "--image"}, {p.Kernel != "", "--kernel"}, {p.VCPU != 0, "--vcpu"}, {p.MemoryMiB != 0, "--memory"},
		{p.SystemOverlaySize != "", "--system-overlay-size"}, {p.WorkDiskSize != "", "--work-disk-size"},
		{p.Init != "", "--init"}, {len(p.Cmd) > 0, "a command"}, {p.Entrypoint != nil, "--entrypoint"},
		{len(p.Env) > 0, "-e"}, {p.WorkingDir != "", "-w"}, {p.User != "", "-u"}, {p.Restart != "", "--restart"},
		{p.NoStart, "--no-start"}, {p.Foreground, "a foreground command"}, {p.Warm, "--warm"}, {p.Cold, "--cold"}, {len(p.Shares) > 0, "-v"},
	} {
		if f.set {
			bad = append(bad, f.flag)
		}
	}
	if len(bad) > 0 {
		return api.Errorf(api.KindInvalidArgument, "--from %s: a VM from a snapshot is the snapshot's machine (image, kernel, size, disks, processes); drop %s",
			p.From, strings.Join(bad, ", "))
	}
	return nil
}

// ForkVM snapshots a running VM into a temporary snapshot, starts a new VM
// from it and removes it: the source runs on (paused only while its state
// is written), the fork starts with the source's processes and files.
func (s *VMService) ForkVM(ctx context.Context, p api.VMForkParams) (model.VMRecord, error) {
	op := s.d.beginOperation(ctx, "vm.fork", "vm", p.Name, "name", p.NewName)
	if p.NewName != "" {
		if err := model.ValidateVMName(p.NewName); err != nil {
			return model.VMRecord{}, op.fail(api.Errorf(api.KindInvalidArgument, "%v", err))
		}
	}
	var sn model.Snapshot
	var tmp string
	_, err := s.withVM(ctx, p.Name, func(rec model.VMRecord) (model.VMRecord, error) {
		var err error
		sn, tmp, err = s.saveSnapshotLocked(ctx, op, rec, "fork-of-"+rec.Name)
		return rec, err
	})
	if err != nil {
		return model.VMRecord{}, op.fail(err)
	}
	// Never published: the .tmp- directory goes when the fork is done,
	// or with the next daemon if this one dies.
	defer os.RemoveAll(tmp)
	sn.Dir = tmp
	// createFrom ends op (done or fail).
	return s.createFrom(ctx, op, api.VMCreateParams{Name: p.NewName, NAT: p.NAT, Ports: p.Ports}, sn)
}
