package daemon

import (
	"context"
	"time"
)

// ttlInterval is how often expired VMs (--ttl) are looked for. A VM goes
// within this of its expiry, and at the first pass after a daemon start,
// so an expiry passed while no daemon ran is honoured at once.
const ttlInterval = 2 * time.Second

// startReaper removes expired VMs until the daemon closes. It is counted
// with the monitors, so Close waits for a removal in progress.
func (s *VMService) startReaper() {
	s.d.monitors.Add(1)
	go func() {
		defer s.d.monitors.Done()
		t := time.NewTicker(ttlInterval)
		defer t.Stop()
		for {
			s.reapExpired(s.d.bg)
			select {
			case <-s.d.bg.Done():
				return
			case <-t.C:
			}
		}
	}()
}

func (s *VMService) reapExpired(ctx context.Context) {
	recs, err := s.d.store.ListVMs(ctx)
	if err != nil {
		return
	}
	now := time.Now()
	for _, r := range recs {
		if r.Spec.ExpiresAt.IsZero() || now.Before(r.Spec.ExpiresAt) {
			continue
		}
		if _, err := s.DeleteVM(ctx, r.ID, true, false); err != nil {
			s.d.log.Warn("remove expired VM", "vm", r.Name, "err", err)
			continue
		}
		s.d.log.Info("removed expired VM (--ttl)", "vm", r.Name, "expired_at", r.Spec.ExpiresAt)
	}
}
