package main

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// The guest's wall clock comes from the host three ways: QEMU's RTC
// (rtc_cmos sets it at boot, to the second) where the VMM has one; the
// banger.time= command line key, applied at boot when the clock is behind
// it (no RTC); and the daemon's SetTimeRequest once the agent answers and
// every minute after, which corrects boot time and drift.

// clockStepMin: an offset smaller than this is left alone, so the periodic
// re-sync does not step the clock back and forth by the request's latency.
const clockStepMin = 10 * time.Millisecond

// setClock sets CLOCK_REALTIME to t (unless it is already within
// clockStepMin) and returns the clock's reading before.
func setClock(t time.Time) (time.Time, error) {
	was := time.Now()
	d := t.Sub(was)
	if d > -clockStepMin && d < clockStepMin {
		return was, nil
	}
	ts := unix.NsecToTimespec(t.UnixNano())
	if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
		return was, fmt.Errorf("clock_settime: %w", err)
	}
	if d > time.Second || d < -time.Second {
		logf("clock stepped by %s to %s", d.Round(time.Millisecond), t.UTC().Format(time.RFC3339))
	}
	return was, nil
}

// applyBootTime moves the clock forward to the host's time when the
// command line was written (banger.time=) if the guest has no better
// source: a clock behind it was not set by an RTC. A clock ahead of it is
// kept: the boot took time since the host wrote it.
func applyBootTime(host time.Time) {
	if host.IsZero() || !time.Now().Before(host) {
		return
	}
	if _, err := setClock(host); err != nil {
		logf("banger.time: %v", err)
	}
}
