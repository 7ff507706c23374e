package daemon

import (
	"context"
	"time"

	"banger/internal/agent"
	"banger/internal/model"
)

// A guest's wall clock is the host's. QEMU's RTC sets it at boot (to the
// second) and banger.time= does where there is no RTC; the daemon then
// sets it over the agent (guestproto.SetTimeRequest) as soon as the guest
// is ready, after re-adopting a running VM at daemon start, and every
// clockSyncInterval while the VM runs, so neither the seconds a TCG boot
// takes nor drift under a loaded host show in the guest.

// clockSyncInterval is how often a running guest's clock is re-set. One
// global request each: cheap.
const clockSyncInterval = time.Minute

// clockSyncTimeout bounds one re-set, dial included.
const clockSyncTimeout = 10 * time.Second

// setGuestClock sends the host's time to the guest and logs a large drift.
// Errors are logged, never fatal: a guest with a wrong clock still runs.
func (s *VMService) setGuestClock(ctx context.Context, name string, c *agent.Client) {
	ctx, cancel := context.WithTimeout(ctx, clockSyncTimeout)
	defer cancel()
	now := time.Now()
	was, err := c.SetTime(ctx, now)
	if err != nil {
		s.d.log.Debug("set guest clock", "vm", name, "err", err)
		return
	}
	if d := now.Sub(was); d > time.Second || d < -time.Second {
		s.d.log.Info("guest clock corrected", "vm", name, "behind", d.Round(time.Millisecond).String())
	}
}

// keepClock re-sets a live VM's clock every clockSyncInterval (first at
// once when now) until its VMM exits or it is no longer live.
func (s *VMService) keepClock(id string, lv *liveVM, now bool) {
	// Counted with the monitors: Close waits for it before the store goes.
	s.d.monitors.Add(1)
	go func() {
		defer s.d.monitors.Done()
		s.clockLoop(id, lv, now)
	}()
}

func (s *VMService) clockLoop(id string, lv *liveVM, now bool) {
	t := time.NewTicker(clockSyncInterval)
	defer t.Stop()
	if !now {
		select {
		case <-lv.done:
			return
		case <-s.d.bg.Done():
			return
		case <-t.C:
		}
	}
	for {
		if s.getLive(id) != lv || s.d.bg.Err() != nil {
			return
		}
		// A paused guest cannot answer; resume sets its clock.
		if rec, err := s.d.store.GetVM(s.d.bg, id); err == nil && rec.State != model.StatePaused {
			ctx, cancel := context.WithTimeout(s.d.bg, agentAttempt)
			if c, err := s.agentClient(ctx, rec, lv); err == nil {
				s.setGuestClock(ctx, rec.Name, c)
			}
			cancel()
		}
		select {
		case <-lv.done:
			return
		case <-s.d.bg.Done():
			return
		case <-t.C:
		}
	}
}
