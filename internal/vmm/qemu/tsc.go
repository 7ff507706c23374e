package qemu

import (
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Under TCG a guest's RDTSC reads the host's TSC, so the guest's clock runs
// at the host TSC's rate divided by the frequency the guest kernel believes
// (tsc_early_khz=). Told 2 GHz on a 2.096 GHz host, a guest clock gained
// ~5%; left to calibrate, the kernel could hang against the PIT or fall
// back to jiffies, which gained ~50% here. So the driver measures the
// host's TSC once and passes that, with tsc=reliable so the guest keeps
// the TSC as its clocksource (its only other ones, jiffies, are worse).

var hostTSC struct {
	once sync.Once
	khz  int
}

// HostTSCKHz is the host TSC's frequency in kHz, measured once against
// CLOCK_MONOTONIC_RAW over 50 ms; 0 when unknown (not amd64, or a
// measurement outside 100 MHz..20 GHz).
func HostTSCKHz() int {
	hostTSC.once.Do(func() { hostTSC.khz = measureTSCKHz(50 * time.Millisecond) })
	return hostTSC.khz
}

func measureTSCKHz(span time.Duration) int {
	if !haveTSC {
		return 0
	}
	// sample pairs a TSC reading with a clock reading: the tightest of a
	// few (tsc, clock, tsc) sandwiches, so a preemption between the two
	// reads cannot skew the result.
	sample := func() (uint64, int64, bool) {
		best := ^uint64(0)
		var tsc uint64
		var ns int64
		for range 8 {
			var ts unix.Timespec
			a := rdtsc()
			if err := unix.ClockGettime(unix.CLOCK_MONOTONIC_RAW, &ts); err != nil {
				return 0, 0, false
			}
			b := rdtsc()
			if b >= a && b-a < best {
				best, tsc, ns = b-a, a+(b-a)/2, ts.Nano()
			}
		}
		return tsc, ns, best != ^uint64(0)
	}
	t0, n0, ok0 := sample()
	time.Sleep(span)
	t1, n1, ok1 := sample()
	if !ok0 || !ok1 || t1 <= t0 || n1 <= n0 {
		return 0
	}
	khz := int((t1 - t0) * 1e6 / uint64(n1-n0))
	if khz < 100_000 || khz > 20_000_000 {
		return 0
	}
	return khz
}
