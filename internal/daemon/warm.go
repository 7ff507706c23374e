package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"banger/api"
	"banger/internal/disk"
	"banger/internal/guestproto"
	"banger/internal/model"
)

// Warm start. The daemon keeps one boot snapshot per shape (image, kernel,
// init mode, vCPUs, memory, disk sizes) in state/warm/<slot>/, laid out
// like a user snapshot. The first create of a shape boots cold and, at
// agent-ready (before anything of that VM's own is in the guest: env, main
// process, provisioning, user keys, DNS, NAT), pauses the VM just long
// enough to save its state and copy its still fresh disks; the VM then
// runs on as any other. A later create of the shape restores that
// snapshot instead of booting, on copies of its disks, takes its own
// identity like a fork (restore.go), then goes through the same publish,
// guest_setup and provision steps as a cold boot.
//
// A snapshot is only good for the exact inputs it was made from beyond
// the shape: the image's digest and key, the kernel's files, the
// initramfs (banger-init's build), the daemon's key (on the work disk),
// the VMM. They are recorded in its manifest (Snapshot.Warm); a create
// whose inputs differ removes the stale one (unless a restore is reading
// it) and takes a new one from its own cold boot.
//
// Guests whose image init is PID 1 (--init image, systemd) always boot
// cold: their services would keep the template's machine id and hostname
// in memory.

// warmSteps are the steps of a create that may start warm: a cold boot's,
// with warm_lookup before the disks, a restore in prepare_disks and boot
// when a snapshot was found, and warm_snapshot after wait_ready when this
// boot is the one to take it.
var warmSteps = []startStep{
	{name: "resolve_kernel", msg: func(r *startRun) string { return r.rec.Spec.Kernel }, run: (*startRun).resolve},
	{name: "prepare_initramfs", msg: func(r *startRun) string { return r.km.Name }, run: (*startRun).prepareInitramfs},
	{name: "prepare_modules", skip: (*startRun).noModules, msg: func(r *startRun) string { return r.km.ModulesRelease }, run: (*startRun).prepareModules},
	// usesKey: the daemon key is one of the inputs, and the restored work
	// disk authorizes it.
	{name: "warm_lookup", usesKey: true, run: (*startRun).warmLookup},
	{name: "prepare_disks", usesKey: true, msg: (*startRun).startKind, run: (*startRun).prepareFreshDisks},
	{name: "network", usesKey: true, skip: (*startRun).noNetwork, run: (*startRun).attachNetwork},
	{name: "runtime_dir", usesKey: true, run: (*startRun).makeRuntimeDir},
	{name: "boot", usesKey: true, msg: func(r *startRun) string { return r.drv.Name() + " " + r.startKind() }, run: (*startRun).bootOrRestore},
	{name: "wait_ready", usesKey: true, msg: func(r *startRun) string { return "up to " + r.s.d.cfg.readyTimeout().String() }, run: (*startRun).waitReady},
	{name: "warm_snapshot", usesKey: true, skip: func(r *startRun) bool { return r.takeWarm == "" }, run: (*startRun).takeWarmSnapshot},
	{name: "identity", usesKey: true, skip: func(r *startRun) bool { return r.snap == nil }, run: (*startRun).newIdentity},
	{name: "join_network", skip: func(r *startRun) bool { return r.snap == nil || r.noNetwork() }, run: (*startRun).joinNetwork},
	{name: "publish", skip: (*startRun).noNetwork, run: (*startRun).publish},
	{name: "guest_setup", msg: (*startRun).setupMessage, run: (*startRun).setupGuest},
	{name: "provision", skip: (*startRun).noProvision, msg: func(r *startRun) string { return r.provisionMsg() }, run: (*startRun).provision},
}

// WarmSteps names the warm-capable create's steps in order.
func WarmSteps() []string {
	names := make([]string, len(warmSteps))
	for i, st := range warmSteps {
		names[i] = st.name
	}
	return names
}

func (s *VMService) warmDir() string { return filepath.Join(s.d.cfg.StateDir, "warm") }

// wantWarm decides whether a fresh create may start warm: asked for
// (--warm, or warm_start without --cold), a driver that snapshots, and an
// init mode that keeps banger-init as PID 1.
func (s *VMService) wantWarm(p api.VMCreateParams, spec model.VMSpec) (bool, error) {
	if p.Warm && p.Cold {
		return false, api.Errorf(api.KindInvalidArgument, "--warm and --cold contradict each other: give one")
	}
	if p.Cold || !p.Warm && !s.d.cfg.WarmStart {
		return false, nil
	}
	drv := s.d.driver
	if drv == nil || !drv.Capabilities().Snapshots {
		if p.Warm && drv != nil {
			return false, api.Errorf(api.KindUnavailable, "--warm: the %s hypervisor cannot snapshot (%s): drop --warm", drv.Name(), drv.Capabilities().NoSnapshots)
		}
		return false, nil
	}
	if len(spec.Shares) > 0 {
		// A share is a device of the VMM: a restore cannot add one.
		if p.Warm {
			return false, api.Errorf(api.KindInvalidArgument, "--warm with -v: a share is a device a restored snapshot does not have; drop --warm or the -v")
		}
		return false, nil
	}
	if spec.Init == guestproto.InitImage {
		if p.Warm {
			return false, api.Errorf(api.KindInvalidArgument, "--warm with --init image: an image's own init keeps the template's identity in memory; drop --warm or use --init banger")
		}
		return false, nil
	}
	return true, nil
}

// startFresh is the boot phase of a create: warm-capable steps when warm,
// else a cold boot.
func (s *VMService) startFresh(warm bool) func(context.Context, *operation, model.VMRecord) (model.VMRecord, error) {
	if !warm {
		return s.startLocked
	}
	return func(ctx context.Context, op *operation, rec model.VMRecord) (model.VMRecord, error) {
		if isActive(rec.State) {
			return rec, api.Errorf(api.KindConflict, "VM %q is already %s", rec.Name, rec.State)
		}
		r := &startRun{s: s, op: op, rec: rec, prev: rec.State, warm: true}
		defer r.warmDone()
		return s.runStart(ctx, r, warmSteps)
	}
}

func (r *startRun) startKind() string {
	if r.snap != nil {
		return "warm from " + r.snap.ID
	}
	return "cold"
}

// warmShape is the slot of rec's shape and the inputs a snapshot in it
// must have been made from.
func (r *startRun) warmShape() (slot, inputs string) {
	spec := r.rec.Spec
	// The owner and their CLI keys are part of the shape: the snapshot's
	// work disk authorizes the keys of the VM it was taken from, which
	// must never reach another user's VM.
	h := sha256.Sum256(fmt.Appendf(nil, "image=%s kernel=%s init=%s vcpu=%d memory=%d overlay=%d work=%d owner=%d keys=%q",
		spec.ImageID, r.km.Name, initModeOf(spec), spec.VCPU, spec.MemoryMiB, spec.SystemOverlaySize, spec.WorkDiskSize, spec.OwnerUID, spec.UserKeys))
	_, pub := r.s.d.keys.current()
	k := sha256.Sum256(pub)
	inputs = fmt.Sprintf("image_digest=%s image_created=%d image_key=%s kernel_release=%s kernel=%s vmlinux=%s initramfs=%s modules=%s daemon_key=%s vmm=%s agent=%s network=%v",
		r.img.Digest, r.img.CreatedAt.UnixNano(), r.img.KeyFingerprint, r.km.Release, r.km.Files[r.km.Kernel], r.km.Files[r.km.Vmlinux],
		filepath.Base(r.initrd), filepath.Base(r.modules), hex.EncodeToString(k[:8]), r.drv.Name(), r.caps.Agent, !r.noNetwork())
	return hex.EncodeToString(h[:10]), inputs
}

// warmLookup picks the start: the shape's snapshot if it is current
// (pinned until the create ends), else a cold boot, which takes the
// snapshot unless another create of the shape already is.
func (r *startRun) warmLookup(ctx context.Context) error {
	s := r.s
	slot, inputs := r.warmShape()
	dir := filepath.Join(s.warmDir(), slot)
	s.warmMu.Lock()
	defer s.warmMu.Unlock()
	sn, err := readSnapshot(dir)
	switch {
	case err == nil && sn.Warm == inputs:
		unpin, err := s.useSnapshot(sn)
		if err == nil {
			r.snap, r.unpin = &sn, unpin
			return nil
		}
	case err == nil:
		if err := s.removeWarm(sn); err != nil {
			r.op.log.Info("stale warm snapshot kept while a restore reads it: this create boots cold", "slot", slot, "err", err)
			return nil
		}
		r.op.log.Info("warm snapshot invalidated", "slot", slot, "was", changedInputs(sn.Warm, inputs))
	case !errors.Is(err, os.ErrNotExist):
		r.op.log.Warn("unreadable warm snapshot: removing it", "slot", slot, "err", err)
		if err := s.removeWarm(model.Snapshot{ID: slot, Dir: dir}); err != nil {
			return nil
		}
	}
	if s.warmTaking == nil {
		s.warmTaking = map[string]bool{}
	}
	if !s.warmTaking[slot] {
		s.warmTaking[slot] = true
		r.takeWarm, r.warmInputs = slot, inputs
	}
	return nil
}

// changedInputs names the inputs of old that differ in now.
func changedInputs(old, now string) string {
	was := map[string]string{}
	for _, f := range strings.Fields(old) {
		k, v, _ := strings.Cut(f, "=")
		was[k] = v
	}
	var diff []string
	for _, f := range strings.Fields(now) {
		k, v, _ := strings.Cut(f, "=")
		if was[k] != v {
			diff = append(diff, k)
		}
	}
	return strings.Join(diff, ",")
}

// removeWarm removes a warm snapshot no restore reads (rename out of
// the slot, then delete). caller holds warmMu.
func (s *VMService) removeWarm(sn model.Snapshot) error {
	s.snapMu.Lock()
	if s.snapInUse[sn.ID] > 0 {
		s.snapMu.Unlock()
		return api.Errorf(api.KindConflict, "warm snapshot %s is being restored", sn.ID)
	}
	gone := filepath.Join(s.warmDir(), snapTmpPrefix+"rm-"+sn.ID+"-"+model.NewID()[:8])
	err := os.Rename(sn.Dir, gone)
	s.snapMu.Unlock()
	if err != nil {
		return err
	}
	return os.RemoveAll(gone)
}

// dropWarm removes the warm snapshots match selects (of a removed image
// or kernel: no create can use them again). One a restore is reading is
// left, and goes as stale at the next lookup of its shape.
func (s *VMService) dropWarm(match func(model.Snapshot) bool) {
	s.warmMu.Lock()
	defer s.warmMu.Unlock()
	ents, _ := os.ReadDir(s.warmDir())
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		sn, err := readSnapshot(filepath.Join(s.warmDir(), e.Name()))
		if err == nil && match(sn) {
			if err := s.removeWarm(sn); err != nil {
				s.d.log.Warn("warm snapshot of a removed image or kernel kept", "slot", sn.ID, "err", err)
			}
		}
	}
}

// warmDone unpins the snapshot a warm start read and frees the slot this
// start was to fill.
func (r *startRun) warmDone() {
	if r.unpin != nil {
		r.unpin()
		r.unpin = nil
	}
	if r.takeWarm != "" {
		r.s.warmMu.Lock()
		delete(r.s.warmTaking, r.takeWarm)
		r.s.warmMu.Unlock()
		r.takeWarm = ""
	}
}

func (r *startRun) prepareFreshDisks(ctx context.Context) error {
	if r.snap != nil {
		return r.copySnapshotDisks(ctx)
	}
	return r.prepareDisks(ctx)
}

func (r *startRun) bootOrRestore(ctx context.Context) error {
	if r.snap != nil {
		return r.restoreVMM(ctx)
	}
	return r.boot(ctx)
}

// takeWarmSnapshot saves the just-ready guest as its shape's snapshot.
// The create goes on whatever happens: a failed snapshot only means the
// next create of the shape boots cold too.
func (r *startRun) takeWarmSnapshot(ctx context.Context) error {
	s, slot := r.s, r.takeWarm
	defer r.warmDone()
	if why := r.agentNotPID1(ctx); why != "" {
		r.op.log.Info("no warm snapshot: the image's own init runs this guest (its services would keep the template's identity)", "slot", slot, "why", why)
		return nil
	}
	if err := os.MkdirAll(s.warmDir(), 0o700); err != nil {
		r.op.log.Warn("warm snapshot", "err", err)
		return nil
	}
	sn, tmp, err := s.saveSnapshotIn(ctx, r.op, r.rec, r.lv, false, s.warmDir(), slot, "warm-"+slot)
	if err != nil {
		r.op.log.Warn("warm snapshot not taken: the next create of this shape boots cold too", "err", err)
		return nil
	}
	// Nothing of this VM's own: the spec is the shape.
	sp := r.rec.Spec
	sn.Spec = model.VMSpec{Image: sp.Image, ImageID: sp.ImageID, Kernel: sp.Kernel, VCPU: sp.VCPU, MemoryMiB: sp.MemoryMiB,
		SystemOverlaySize: sp.SystemOverlaySize, WorkDiskSize: sp.WorkDiskSize, Init: sp.Init}
	sn.SourceID, sn.SourceName, sn.Warm = "", "", r.warmInputs
	b, err := json.MarshalIndent(sn, "", "  ")
	if err == nil {
		err = disk.WriteFileAtomic(filepath.Join(tmp, snapManifest), b, 0o600)
	}
	if err == nil {
		s.warmMu.Lock()
		err = os.Rename(tmp, filepath.Join(s.warmDir(), slot))
		s.warmMu.Unlock()
		disk.SyncDir(s.warmDir())
	}
	if err != nil {
		os.RemoveAll(tmp)
		r.op.log.Warn("warm snapshot not published", "slot", slot, "err", err)
		return nil
	}
	r.op.log.Info("warm snapshot taken", "slot", slot, "paused", sn.Paused.String(), "state_bytes", sn.StateBytes, "disk_bytes", sn.DiskBytes)
	return nil
}

// pid1Probe prints the agent's pid as its sessions see it (a variable:
// the tests' stand-in guest runs sessions on the host, under no PID 1).
var pid1Probe = "echo $PPID"

// agentNotPID1 says why the guest is not run by banger-init as PID 1
// ("" when it is): in auto mode the guest decides, after boot, whether
// the image's init (systemd) takes PID 1, and the agent is then its
// child. The agent's sessions are its children, so their $PPID is 1
// only under banger-init.
func (r *startRun) agentNotPID1(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, pushKeyTimeout)
	defer cancel()
	c, err := r.s.agentClient(ctx, r.rec, r.lv)
	if err != nil {
		return err.Error()
	}
	var out strings.Builder
	code, err := c.Exec(ctx, pid1Probe, nil, strings.NewReader(""), &out, io.Discard)
	switch {
	case err != nil:
		return err.Error()
	case code != 0 || strings.TrimSpace(out.String()) != "1":
		return fmt.Sprintf("the agent's parent is pid %q", strings.TrimSpace(out.String()))
	}
	return ""
}

// warmSummary is doctor's line on warm start.
func (s *VMService) warmSummary() string {
	ents, _ := os.ReadDir(s.warmDir())
	n, bytes := 0, int64(0)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		sn, err := readSnapshot(filepath.Join(s.warmDir(), e.Name()))
		if err != nil {
			continue
		}
		n++
		bytes += allocated(filepath.Join(sn.Dir, snapStateName)) + sn.DiskBytes
	}
	mode := "off: creates boot cold unless --warm (config warm_start = true, or daemon --warm-start, turns it on)"
	if s.d.cfg.WarmStart {
		mode = "on: creates restore their shape's boot snapshot unless --cold"
	}
	if drv := s.d.driver; drv != nil && !drv.Capabilities().Snapshots {
		mode = "unavailable: the " + drv.Name() + " hypervisor cannot snapshot; every create boots cold"
	}
	return fmt.Sprintf("%s; %d boot snapshot(s), %s on disk (%s)", mode, n, model.FormatSize(bytes), s.warmDir())
}
