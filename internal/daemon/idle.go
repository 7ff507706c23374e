package daemon

import (
	"context"
	"sync"
	"time"

	"banger/api"
	"banger/internal/model"
	"banger/internal/procstat"
)

// --idle-stop: a running VM is stopped (gracefully, as `vm stop`) once it
// has been idle for its IdleStop. Idle means all of, for that long:
//
//   - no vm.exec or vm.proxy call in progress (vm exec, vm ssh, vm cp and
//     SDK calls all ride these) and none begun or ended;
//   - no vm.ssh_info call (a plain `ssh` to the guest through the config
//     of `vm ssh-config` asks for it first);
//   - no port-forward connection open, opened or closed;
//   - guest CPU under idleCPUFraction: the VMM process's CPU time
//     (utime+stime of every thread, /proc/PID/stat) grew by less than that
//     share of one host CPU over each idleInterval.
//
// The threshold is not zero because an idle guest still costs its VMM
// some host CPU: timer ticks, the main loop, and under TCG the emulation
// of an idling vCPU. An idle busybox guest under TCG here used 2.2 % of a
// host CPU (TestIdleStop logs it; BENCHMARKS.md); a guest running
// anything (a build, a service answering) is well above 10 %.
//
// Idle time is counted by this daemon: it starts again at every boot of
// the VM and at every daemon start (an adopted VM gets its full IdleStop
// again), so a daemon restart never stops a VM early.
const (
	idleInterval    = 2 * time.Second
	idleCPUFraction = 0.10
)

// parseIdleStop reads vm.create's idle_stop ("" = none).
func parseIdleStop(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, api.Errorf(api.KindInvalidArgument, "idle_stop %q: want a positive duration such as 10m or 1h", s)
	}
	if d < idleInterval {
		return 0, api.Errorf(api.KindInvalidArgument, "idle_stop %q: the shortest is %s (idle is checked that often)", s, idleInterval)
	}
	return d, nil
}

// idleTracker is what the daemon saw of each running VM's activity.
type idleTracker struct {
	mu  sync.Mutex           // guards vms
	vms map[string]*vmActive // VM id →
}

type vmActive struct {
	busy int       // exec and proxy calls in progress
	last time.Time // last traffic, or CPU over the threshold
	// The previous CPU sample, of process pid: a new pid is a new boot,
	// which starts the idle time again.
	pid   int
	cpu   time.Duration
	cpuAt time.Time
}

// entry returns id's record, made with last = now. t.mu must be held.
func (t *idleTracker) entry(id string, now time.Time) *vmActive {
	if t.vms == nil {
		t.vms = map[string]*vmActive{}
	}
	a := t.vms[id]
	if a == nil {
		a = &vmActive{last: now}
		t.vms[id] = a
	}
	return a
}

// touch records traffic for id now.
func (t *idleTracker) touch(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	t.entry(id, now).last = now
}

// begin marks a call on id in progress until the returned func runs;
// the VM is not idle meanwhile, however long the call.
func (t *idleTracker) begin(id string) (end func()) {
	t.mu.Lock()
	now := time.Now()
	a := t.entry(id, now)
	a.busy++
	a.last = now
	t.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			t.mu.Lock()
			defer t.mu.Unlock()
			a.busy--
			a.last = time.Now()
		})
	}
}

// forget drops id (the VM is gone).
func (t *idleTracker) forget(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.vms, id)
}

// idleFor observes rec at now (its VMM's CPU since the last observation,
// its port forwards' open connections and last activity) and returns how
// long it has been idle.
func (t *idleTracker) idleFor(rec model.VMRecord, now time.Time, fwdOpen int, fwdLast time.Time, cpu time.Duration, cpuErr error) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	a := t.entry(rec.ID, now)
	if a.pid != rec.Runtime.PID {
		// A boot (or this daemon's first look at an adopted VM): idle
		// time starts now.
		a.pid, a.last, a.cpuAt = rec.Runtime.PID, now, time.Time{}
	}
	if cpuErr == nil {
		if !a.cpuAt.IsZero() && now.After(a.cpuAt) {
			frac := float64(cpu-a.cpu) / float64(now.Sub(a.cpuAt))
			if frac >= idleCPUFraction {
				a.last = now
			}
		}
		a.cpu, a.cpuAt = cpu, now
	}
	if a.busy > 0 || fwdOpen > 0 {
		a.last = now
	}
	if fwdLast.After(a.last) {
		a.last = fwdLast
	}
	return now.Sub(a.last)
}

// busy reports whether a call on id is in progress.
func (t *idleTracker) busy(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	a := t.vms[id]
	return a != nil && a.busy > 0
}

// startIdleStopper stops idle VMs (--idle-stop) until the daemon closes,
// counted with the monitors like the TTL reaper.
func (s *VMService) startIdleStopper() {
	s.d.monitors.Add(1)
	go func() {
		defer s.d.monitors.Done()
		t := time.NewTicker(idleInterval)
		defer t.Stop()
		for {
			select {
			case <-s.d.bg.Done():
				return
			case <-t.C:
			}
			s.stopIdle(s.d.bg)
		}
	}()
}

func (s *VMService) stopIdle(ctx context.Context) {
	recs, err := s.d.store.ListVMs(ctx)
	if err != nil {
		return
	}
	seen := map[string]bool{}
	for _, r := range recs {
		seen[r.ID] = true
		if r.Spec.IdleStop <= 0 || r.State != model.StateRunning || r.Runtime.PID <= 0 {
			continue
		}
		now := time.Now()
		cpu, cerr := procstat.CPUTime(r.Runtime.PID)
		open, last := s.d.net.fwd.Activity(r.ID)
		idle := s.idle.idleFor(r, now, open, last, cpu, cerr)
		if idle < r.Spec.IdleStop {
			continue
		}
		if err := s.stopIdleVM(ctx, r, idle); err != nil {
			s.d.log.Warn("stop idle VM (--idle-stop)", "vm", r.Name, "err", err)
		}
	}
	s.idle.mu.Lock()
	for id := range s.idle.vms {
		if !seen[id] {
			delete(s.idle.vms, id)
		}
	}
	s.idle.mu.Unlock()
}

// stopIdleVM stops rec under its lock, re-checking that it still runs the
// same boot and that no call began meanwhile.
func (s *VMService) stopIdleVM(ctx context.Context, r model.VMRecord, idle time.Duration) error {
	_, err := s.withVM(ctx, r.ID, func(rec model.VMRecord) (model.VMRecord, error) {
		if rec.State != model.StateRunning || rec.Runtime.PID != r.Runtime.PID || s.idle.busy(rec.ID) {
			return rec, nil
		}
		op := s.d.beginOperation(ctx, "vm.stop", "vm_id", rec.ID, "vm", rec.Name, "reason", "idle", "idle_for", idle.Round(time.Second).String())
		rec, err := s.stopLocked(withStopReason(ctx, "idle"), op, rec, false)
		if err != nil {
			return rec, op.fail(err)
		}
		op.done()
		s.d.log.Info("stopped idle VM (--idle-stop)", "vm", rec.Name, "idle_for", idle.Round(time.Second), "idle_stop", rec.Spec.IdleStop)
		return rec, nil
	})
	return err
}

type stopReasonKey struct{}

// withStopReason marks a stop the daemon decided on (idle); the stop
// event carries it as the reason attribute.
func withStopReason(ctx context.Context, reason string) context.Context {
	return context.WithValue(ctx, stopReasonKey{}, reason)
}

// stopAttrs are the stop event's attributes.
func stopAttrs(ctx context.Context) map[string]string {
	if r, ok := ctx.Value(stopReasonKey{}).(string); ok {
		return map[string]string{"reason": r}
	}
	return nil
}
