package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"banger/api"
	"banger/internal/keylock"
	"banger/internal/model"
	"banger/internal/store"
)

// VMService owns VM records and their lifecycle.
type VMService struct {
	d *Daemon

	// createVMMu serializes reserveVM only: the name check, guest IP
	// allocation and the insert of the "created" row. Nothing slow (image
	// pulls, disk copies, boots) ever runs under it.
	createVMMu sync.Mutex

	// vmLocks holds one lock per VM id: start, stop, delete and the boot
	// phase of create take it, so operations on one VM are serialized while
	// different VMs proceed in parallel.
	vmLocks keylock.Map

	liveMu sync.Mutex         // guards live
	live   map[string]*liveVM // VM id -> its running VMM

	// snapMu guards snapshot publication (the name re-check and the
	// rename into snapshots/), removal (the rename out) and snapInUse.
	// Never held across a copy or a VMM call.
	snapMu sync.Mutex
	// snapInUse counts the restores reading each snapshot (id → n).
	snapInUse map[string]int

	idle  idleTracker // idle.go: traffic and CPU per VM for --idle-stop
	stats statsState  // stats.go: the previous CPU reading per VM

	// warmMu guards the warm slots (warm.go): lookup, invalidation,
	// publication and warmTaking, the slots a cold boot is filling.
	// Never held across a copy or a VMM call. Lock order: warmMu, then
	// snapMu.
	warmMu     sync.Mutex
	warmTaking map[string]bool

	// tmplLocks: one build of each disk template at a time (disktmpl.go).
	tmplLocks keylock.Map
}

func newVMService(d *Daemon) *VMService { return &VMService{d: d} }

// List returns the running and starting VMs, or all with p.All.
func (s *VMService) List(ctx context.Context, p api.VMListParams) ([]api.VM, error) {
	filters, err := parseFilters(p.Filters)
	if err != nil {
		return nil, err
	}
	all := p.All || hasStateFilter(filters)
	recs, err := s.d.store.ListVMs(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]api.VM, 0, len(recs))
	for _, r := range recs {
		if !owns(ctx, r) || !matchAll(filters, r) {
			continue
		}
		if all || r.State == model.StateRunning || r.State == model.StateStarting || r.State == model.StatePaused {
			out = append(out, api.VMFromRecord(r))
		}
	}
	return out, nil
}

// find resolves a VM by exact name, then by id.
func (s *VMService) find(ctx context.Context, name string) (model.VMRecord, error) {
	if name == "" {
		return model.VMRecord{}, api.Errorf(api.KindInvalidArgument, "missing VM name")
	}
	rec, err := s.d.store.GetVMByName(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		rec, err = s.d.store.GetVM(ctx, name)
	}
	if errors.Is(err, store.ErrNotFound) || err == nil && !owns(ctx, rec) {
		// Another user's VM is not there for this caller.
		return model.VMRecord{}, api.Errorf(api.KindNotFound, "VM %q not found: `banger vm ls -a` lists VMs", name)
	}
	return rec, err
}

// createRequest is a validated vm.create.
type createRequest struct {
	name string
	spec model.VMSpec
}

// validateCreate checks every field. Any RPC caller lands here without going
// through the CLI's flag parser, so this is the real gate.
func (s *VMService) validateCreate(p api.VMCreateParams) (createRequest, error) {
	r := createRequest{name: p.Name, spec: model.VMSpec{
		Image: p.Image, Kernel: p.Kernel, VCPU: p.VCPU, MemoryMiB: p.MemoryMiB, NAT: p.NAT,
		SystemOverlaySize: model.DefaultSystemOverlaySize, WorkDiskSize: model.DefaultWorkDiskSize,
	}}
	if r.name != "" {
		if err := model.ValidateVMName(r.name); err != nil {
			return r, api.Errorf(api.KindInvalidArgument, "%v", err)
		}
	}
	if r.spec.Image == "" {
		r.spec.Image = s.d.cfg.DefaultImage
	}
	if r.spec.VCPU == 0 {
		r.spec.VCPU = model.DefaultVCPU
	}
	if r.spec.VCPU < 1 || r.spec.VCPU > model.MaxVCPU {
		return r, api.Errorf(api.KindInvalidArgument, "invalid vcpu count %d: must be 1-%d", p.VCPU, model.MaxVCPU)
	}
	if r.spec.MemoryMiB == 0 {
		r.spec.MemoryMiB = model.DefaultMemoryMiB
	}
	if r.spec.MemoryMiB < model.MinMemoryMiB || r.spec.MemoryMiB > model.MaxMemoryMiB {
		return r, api.Errorf(api.KindInvalidArgument, "invalid memory %d MiB: must be %d-%d", p.MemoryMiB, model.MinMemoryMiB, model.MaxMemoryMiB)
	}
	for _, sz := range []struct {
		flag, val string
		dst       *int64
	}{{"system overlay size", p.SystemOverlaySize, &r.spec.SystemOverlaySize}, {"work disk size", p.WorkDiskSize, &r.spec.WorkDiskSize}} {
		if sz.val == "" {
			continue
		}
		n, err := model.ParseSize(sz.val)
		if err != nil {
			return r, api.Errorf(api.KindInvalidArgument, "%s: %v", sz.flag, err)
		}
		if n < model.MinDiskSize || n > model.MaxDiskSize {
			return r, api.Errorf(api.KindInvalidArgument, "%s %q: must be between %s and %s", sz.flag, sz.val, model.FormatSize(model.MinDiskSize), model.FormatSize(model.MaxDiskSize))
		}
		*sz.dst = n
	}
	if err := validateProcessParams(p); err != nil { // mainproc.go
		return r, err
	}
	ports, err := parsePorts(p.Ports)
	if err != nil {
		return r, err
	}
	r.spec.Ports = ports
	if r.spec.Provision, err = checkProvision(p); err != nil {
		return r, err
	}
	if r.spec.Shares, err = parseShares(p.Shares); err != nil {
		return r, err
	}
	// The hypervisor's own limits, before anything is reserved (a start
	// checks them again: the driver may differ after a restart).
	if drv := s.d.driver; drv != nil {
		if err := checkCapabilities(drv.Capabilities(), drv.Name(), r.spec); err != nil {
			return r, err
		}
	}
	// The disks against the host's free space now; memory is checked at
	// each start (a --no-start VM holds none).
	if err := checkHostDisk(s.d.cfg.StateDir, newDiskSizes(r.spec, "")); err != nil {
		return r, err
	}
	return r, nil
}

// CreateVM runs the three phases of vm.create: resolve the image (no
// global lock), reserve the VM under createVMMu, then boot under the VM's
// own lock unless NoStart.
func (s *VMService) CreateVM(ctx context.Context, p api.VMCreateParams) (model.VMRecord, error) {
	if p.From != "" {
		return s.createFromSnapshot(ctx, p) // restore.go
	}
	op := s.d.beginOperation(ctx, "vm.create", "name", p.Name, "image", p.Image)
	req, err := s.validateCreate(p)
	if err != nil {
		return model.VMRecord{}, op.fail(err)
	}
	if c := callerOf(ctx); c.known {
		req.spec.OwnerUID = int(c.UID)
	}
	if err := checkPortsFor(ctx, req.spec.Ports); err != nil {
		return model.VMRecord{}, op.fail(err)
	}
	if err := resolveSharesFor(ctx, req.spec.Shares); err != nil {
		return model.VMRecord{}, op.fail(err)
	}
	if err := applyCreateOwn(p, &req.spec); err != nil {
		return model.VMRecord{}, op.fail(err)
	}
	op.stage("resolve_image", req.spec.Image)
	if err := s.resolveImage(ctx, op, &req.spec); err != nil {
		return model.VMRecord{}, op.fail(err)
	}
	if err := s.resolveProcess(ctx, &req.spec, p); err != nil { // mainproc.go
		return model.VMRecord{}, op.fail(err)
	}
	warm, err := s.wantWarm(p, req.spec) // warm.go
	if err != nil {
		return model.VMRecord{}, op.fail(err)
	}
	op.stage("reserve_vm", req.name)
	rec, err := s.reserveVM(ctx, req)
	if err != nil {
		return model.VMRecord{}, op.fail(err)
	}
	s.d.vmEvent("create", rec, map[string]string{"image": rec.Spec.Image})
	op.setVM(rec)
	if err := s.saveProvision(rec, p); err != nil {
		if rerr := s.unreserveVM(ctx, rec); rerr != nil {
			err = fmt.Errorf("%w (roll back the reservation: %w)", err, rerr)
		}
		return model.VMRecord{}, op.fail(err)
	}
	if p.NoStart {
		op.done()
		return rec, nil
	}
	return s.bootReserved(ctx, op, rec, s.startFresh(warm))
}

// bootReserved is phase 3 of a create: boot the reserved rec under its
// own lock only (other creates run on) with start (a cold boot or a
// restore); a failure before any VMM ran removes the reservation.
func (s *VMService) bootReserved(ctx context.Context, op *operation, rec model.VMRecord,
	start func(context.Context, *operation, model.VMRecord) (model.VMRecord, error)) (model.VMRecord, error) {
	unlock, err := s.vmLocks.Lock(ctx, rec.ID)
	if err != nil {
		// Only a caller that hung up gets here: nothing uses the new id.
		if rerr := s.unreserveVM(ctx, rec); rerr != nil {
			op.log.Warn("roll back the reservation of a cancelled create", "err", rerr)
			err = fmt.Errorf("%w (roll back the reservation: %w)", err, rerr)
		}
		return rec, op.fail(err)
	}
	defer unlock()
	booted, err := start(ctx, op, rec)
	if err != nil {
		if booted.State != model.StateError {
			// It failed before a VMM ran (tap, port clash, disks, a caller
			// that hung up): undo
			// the reservation so a failed create leaves nothing behind. A
			// boot failure keeps the VM in state error for `vm logs`.
			if rerr := s.unreserveVM(ctx, rec); rerr != nil {
				op.log.Warn("roll back the reservation of a failed create", "err", rerr)
				err = fmt.Errorf("%w (roll back the reservation: %w)", err, rerr)
			}
		}
		return booted, op.fail(err)
	}
	op.done()
	return booted, nil
}

// unreserveVM undoes reserveVM for a create that failed before a VMM ran:
// the row first, then the directory (the order DeleteVM uses: a crash in
// between leaves an orphan directory, which reconcile removes). Caller
// holds the VM's lock. It runs even if the caller hung up, and joins
// what failed: a row left behind shows in `vm ls -a` and must be removed
// by hand, so the caller hears of it.
func (s *VMService) unreserveVM(ctx context.Context, rec model.VMRecord) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
	defer cancel()
	var errs []error
	if err := s.d.store.DeleteVM(ctx, rec.ID); err != nil {
		errs = append(errs, fmt.Errorf("delete the row of VM %q: %w", rec.Name, err))
	}
	if err := os.RemoveAll(rec.Runtime.Dir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", rec.Runtime.Dir, err))
	}
	return errors.Join(errs...)
}

// reserveVM holds createVMMu only long enough to pick or verify the name,
// allocate a guest IP from the store, make the VM's directory and persist
// the reservation row. Everything else runs outside this lock.
func (s *VMService) reserveVM(ctx context.Context, req createRequest) (model.VMRecord, error) {
	s.createVMMu.Lock()
	defer s.createVMMu.Unlock()

	name := req.name
	if name == "" {
		for i := 0; ; i++ {
			name = model.GenerateVMName()
			if _, err := s.d.store.GetVMByName(ctx, name); errors.Is(err, store.ErrNotFound) {
				break
			} else if err != nil {
				return model.VMRecord{}, err
			}
			if i > 50 {
				return model.VMRecord{}, api.Errorf(api.KindInternal, "could not generate a free VM name")
			}
		}
	} else if _, err := s.d.store.GetVMByName(ctx, name); err == nil {
		return model.VMRecord{}, api.Errorf(api.KindAlreadyExists, "VM %q already exists: pick another --name or remove it with `banger vm rm %s`", name, name)
	} else if !errors.Is(err, store.ErrNotFound) {
		return model.VMRecord{}, err
	}
	ip, err := s.d.store.NextGuestIP(ctx, s.d.cfg.BridgePrefix())
	if err != nil {
		return model.VMRecord{}, api.Errorf(api.KindUnavailable, "%v", err)
	}
	id := model.NewID()
	dir := filepath.Join(s.d.cfg.StateDir, "vms", id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return model.VMRecord{}, fmt.Errorf("create VM dir: %w", err)
	}
	now := time.Now().UTC()
	rec := model.VMRecord{
		ID: id, Name: name, State: model.StateStopped, Spec: req.spec,
		Runtime:   model.VMRuntime{GuestIP: ip.String(), Dir: dir},
		CreatedAt: now, UpdatedAt: now,
	}
	if err := s.d.store.InsertVM(ctx, rec); err != nil {
		os.RemoveAll(dir)
		if errors.Is(err, store.ErrConflict) {
			return model.VMRecord{}, api.Errorf(api.KindAlreadyExists, "VM %q already exists", name)
		}
		return model.VMRecord{}, err
	}
	s.d.saveManifest(rec)
	return rec, nil
}

// DeleteVM removes a VM: its files and its row. A running VM needs force.
//
// Its snapshots are kept unless withSnapshots: a snapshot is a machine of
// its own, restorable after its source is gone.
func (s *VMService) DeleteVM(ctx context.Context, name string, force, withSnapshots bool) (model.VMRecord, error) {
	return s.withVM(ctx, name, func(rec model.VMRecord) (model.VMRecord, error) {
		op := s.d.beginOperation(ctx, "vm.delete", "vm_id", rec.ID, "vm", rec.Name)
		if isActive(rec.State) {
			if !force {
				return rec, op.fail(api.Errorf(api.KindConflict, "VM %q is %s: stop it first or use `banger vm rm -f %s`", rec.Name, rec.State, rec.Name))
			}
			op.stage("stop", "force-stopping "+rec.Name)
			var err error
			if rec, err = s.stopLocked(ctx, op, rec, true); err != nil {
				return rec, op.fail(err)
			}
		}
		op.stage("remove", rec.Name)
		if rec.Runtime.Dir != "" {
			// First: a crash after the row is gone must not leave a
			// directory that --adopt would bring back.
			os.Remove(filepath.Join(rec.Runtime.Dir, manifestName))
		}
		if err := s.d.store.DeleteVM(ctx, rec.ID); err != nil {
			return rec, op.fail(err)
		}
		// The row goes first: a crash between the two leaves an orphan
		// directory that reconcile removes, never a row pointing at nothing.
		if rec.Runtime.Dir != "" {
			os.RemoveAll(rec.Runtime.Dir)
		}
		if withSnapshots {
			op.stage("remove_snapshots", rec.Name)
			if err := s.deleteSnapshotsOf(rec.ID); err != nil {
				return rec, op.fail(fmt.Errorf("VM %q removed; its snapshots: %w", rec.Name, err))
			}
		}
		s.d.vmEvent("rm", rec, nil)
		op.done()
		return rec, nil
	})
}

// isActive: a VMM runs (or is being started or stopped) for the VM. A
// paused VM's VMM runs.
func isActive(st model.VMState) bool {
	return st == model.StateRunning || st == model.StateStarting || st == model.StateStopping || st == model.StatePaused
}

// applyCreateOwn sets what is the create's own whatever the machine came
// from (a boot or a snapshot, whose source had its own): labels, the TTL
// and the idle stop.
func applyCreateOwn(p api.VMCreateParams, spec *model.VMSpec) error {
	if err := model.ValidateLabels(p.Labels); err != nil {
		return api.Errorf(api.KindInvalidArgument, "%v", err)
	}
	spec.Labels = p.Labels
	spec.ExpiresAt = time.Time{}
	if p.TTL != "" {
		ttl, err := time.ParseDuration(p.TTL)
		if err != nil || ttl <= 0 {
			return api.Errorf(api.KindInvalidArgument, "ttl %q: want a positive duration such as 30m or 2h", p.TTL)
		}
		spec.ExpiresAt = time.Now().Add(ttl).UTC()
	}
	var err error
	spec.IdleStop, err = parseIdleStop(p.IdleStop) // idle.go
	return err
}
