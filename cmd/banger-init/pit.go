package main

import (
	"os"
	"strings"
)

// An idle guest should cost the host nothing, but on x86 the firmware
// leaves the PIT's channel 0 running as an 18.2 Hz square wave, and a
// kernel that times with the local APIC and the TSC never looks at it
// again (Linux stops it itself only from 6.10 on). The guest masks its
// interrupt; QEMU still emulates every edge: its main loop woke 36 times a
// second for it, about half of an idle VM's host CPU (measured: the
// QEMU main thread's utime+stime, 0.55 % of a core idle, its only timer
// the PIT's). stopIdlePIT puts channel 0 into mode 0 (one-shot, already
// expired), which stops the emulation, unless the kernel uses the PIT: as
// a clock event device (then it owns it) or as its clocksource (then it
// reads its counter).

// pitInUse says from the kernel's own reports whether it uses the PIT.
// Unreadable reports count as in use: this is an optimisation, never a
// risk to the guest's clock.
func pitInUse(timerList, clocksource string) bool {
	if timerList == "" || clocksource == "" {
		return true
	}
	if isPIT(clocksource) {
		return true
	}
	for _, line := range strings.Split(timerList, "\n") {
		if name, ok := strings.CutPrefix(strings.TrimSpace(line), "Clock Event Device:"); ok && isPIT(name) {
			return true
		}
	}
	return false
}

// isPIT: the names Linux gives the i8253 as a clocksource and as a clock
// event device.
func isPIT(name string) bool {
	n := strings.TrimSpace(name)
	return n == "pit" || n == "i8253"
}

func stopIdlePIT() {
	if !havePortIO {
		return
	}
	tl, _ := os.ReadFile("/proc/timer_list")
	cs, _ := os.ReadFile("/sys/devices/system/clocksource/clocksource0/current_clocksource")
	if pitInUse(string(tl), string(cs)) {
		return
	}
	if err := stopPIT(); err != nil {
		logf("pit: %v (left running)", err)
	}
}
