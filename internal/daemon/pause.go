package daemon

import (
	"context"
	"fmt"
	"time"

	"banger/api"
	"banger/internal/model"
	"banger/internal/vmm"
)

// Pause and resume. A paused VM's VMM runs with its vCPUs stopped: its
// memory, devices, tap and agent connection stay, nothing in the guest
// runs. The record's state says what the user (or a snapshot) asked for;
// the VMM is asked (Snapshotter.Paused) when a daemon re-adopts it.
//
//	running --pause--> paused --resume--> running
//	paused --stop--> (resume, then the graceful stop) --> stopped
//	paused --stop -f / rm -f--> stopped (killed)
//
// Exec, ssh and key pushes to a paused VM fail at once with a conflict
// naming `vm resume` (notRunningErr) instead of hanging on a guest that
// cannot answer.

// pauseTimeout bounds one QMP stop/cont or status query.
const pauseTimeout = 10 * time.Second

// snapshotter returns the Snapshotter of a live VM, or the error saying
// the hypervisor has none. The capability decides, not the driver's name.
func (s *VMService) snapshotter(lv *liveVM) (vmm.Snapshotter, error) {
	drv, err := s.d.driverFor()
	if err != nil {
		return nil, err
	}
	caps := drv.Capabilities()
	sn, ok := lv.handle.(vmm.Snapshotter)
	if !caps.Snapshots || !ok {
		why := caps.NoSnapshots
		if why == "" {
			why = "the " + drv.Name() + " driver has no snapshot support"
		}
		return nil, api.Errorf(api.KindUnavailable, "%w: %s", vmm.ErrNoSnapshots, why)
	}
	return sn, nil
}

// PauseVM stops a running VM's vCPUs.
func (s *VMService) PauseVM(ctx context.Context, name string) (model.VMRecord, error) {
	return s.withVM(ctx, name, func(rec model.VMRecord) (model.VMRecord, error) {
		op := s.d.beginOperation(ctx, "vm.pause", "vm_id", rec.ID, "vm", rec.Name)
		rec, err := s.pauseLocked(ctx, rec)
		if err != nil {
			return rec, op.fail(err)
		}
		op.done()
		return rec, nil
	})
}

// pauseLocked pauses rec. caller holds s.vmLocks[rec.ID].
func (s *VMService) pauseLocked(ctx context.Context, rec model.VMRecord) (model.VMRecord, error) {
	if rec.State == model.StatePaused {
		return rec, api.Errorf(api.KindConflict, "VM %q is already paused", rec.Name)
	}
	lv := s.getLive(rec.ID)
	if err := notRunningErr(rec, lv); err != nil {
		return rec, err
	}
	sn, err := s.snapshotter(lv)
	if err != nil {
		return rec, err
	}
	pctx, cancel := context.WithTimeout(ctx, pauseTimeout)
	defer cancel()
	if err := sn.Pause(pctx); err != nil {
		return rec, api.Errorf(api.KindUnavailable, "pause VM %q: %w", rec.Name, err)
	}
	rec.State = model.StatePaused
	if err := s.d.store.UpdateVM(ctx, rec); err != nil {
		// Do not leave a VM paused that the record calls running.
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), pauseTimeout)
		sn.Resume(rctx)
		rcancel()
		return rec, fmt.Errorf("record state paused: %w", err)
	}
	return rec, nil
}

// ResumeVM runs a paused VM again. It returns once the guest's agent
// answers, with the guest's clock set (it stood still while paused).
func (s *VMService) ResumeVM(ctx context.Context, name string) (model.VMRecord, error) {
	return s.withVM(ctx, name, func(rec model.VMRecord) (model.VMRecord, error) {
		op := s.d.beginOperation(ctx, "vm.resume", "vm_id", rec.ID, "vm", rec.Name)
		if rec.State != model.StatePaused {
			return rec, op.fail(api.Errorf(api.KindConflict, "VM %q is not paused (state %s)", rec.Name, rec.State))
		}
		rec, err := s.resumeLocked(ctx, rec)
		if err != nil {
			return rec, op.fail(err)
		}
		op.done()
		return rec, nil
	})
}

// resumeLocked resumes a paused rec and waits for its agent. caller holds
// s.vmLocks[rec.ID].
func (s *VMService) resumeLocked(ctx context.Context, rec model.VMRecord) (model.VMRecord, error) {
	lv := s.getLive(rec.ID)
	if lv == nil {
		return rec, api.Errorf(api.KindConflict, "VM %q has no running VMM (state %s)", rec.Name, rec.State)
	}
	sn, err := s.snapshotter(lv)
	if err != nil {
		return rec, err
	}
	pctx, cancel := context.WithTimeout(ctx, pauseTimeout)
	err = sn.Resume(pctx)
	cancel()
	if err != nil {
		return rec, api.Errorf(api.KindUnavailable, "resume VM %q: %w", rec.Name, err)
	}
	rec.State = model.StateRunning
	if err := s.d.store.UpdateVM(ctx, rec); err != nil {
		return rec, fmt.Errorf("record state running: %w", err)
	}
	s.guestAwake(ctx, rec, lv)
	return rec, nil
}

// guestAwake is what follows every resume: the agent answers again (the
// connection that stalled while paused, or a new one) and the clock, which
// stood still, is set. A guest that does not answer is logged, not an
// error: the VM runs, and the next exec redials.
func (s *VMService) guestAwake(ctx context.Context, rec model.VMRecord, lv *liveVM) {
	actx, cancel := context.WithTimeout(ctx, agentAttempt)
	defer cancel()
	c, err := s.agentClient(actx, rec, lv)
	if err != nil {
		s.d.log.Warn("agent after resume", "vm", rec.Name, "err", err)
		return
	}
	s.setGuestClock(actx, rec.Name, c)
}

// adoptedState is the state of a re-adopted VM: paused or running, as its
// VMM says. A VM the record calls running but that is paused was paused
// by a snapshot whose daemon died: it is resumed, since nobody else will.
func (s *VMService) adoptedState(ctx context.Context, rec model.VMRecord, h vmm.Handle) model.VMState {
	sn, err := s.snapshotter(&liveVM{handle: h})
	if err != nil {
		return model.StateRunning
	}
	qctx, cancel := context.WithTimeout(ctx, pauseTimeout)
	defer cancel()
	paused, err := sn.Paused(qctx)
	if err != nil {
		s.d.log.Warn("ask the VMM whether it is paused", "vm", rec.Name, "err", err)
		if rec.State == model.StatePaused {
			return model.StatePaused
		}
		return model.StateRunning
	}
	if !paused {
		return model.StateRunning
	}
	if rec.State != model.StatePaused {
		if err := sn.Resume(qctx); err != nil {
			s.d.log.Warn("resume a VM an interrupted snapshot left paused", "vm", rec.Name, "err", err)
			return model.StatePaused
		}
		s.d.log.Info("resumed a VM an interrupted snapshot left paused", "vm", rec.Name)
		return model.StateRunning
	}
	return model.StatePaused
}
