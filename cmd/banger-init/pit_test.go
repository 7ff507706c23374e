package main

import "testing"

func TestPITInUse(t *testing.T) {
	const apicOnly = "Tick Device: mode:     1\nPer CPU device: 0\nClock Event Device: lapic\n max_delta_ns:   1\n"
	const pitBroadcast = "Tick Device: mode:     1\nBroadcast device\nClock Event Device: pit\n max_delta_ns:   1\n" + apicOnly
	for _, c := range []struct {
		name, tl, cs string
		want         bool
	}{
		{"lapic and tsc", apicOnly, "tsc\n", false},
		{"pit broadcast", pitBroadcast, "tsc\n", true},
		{"pit clocksource", apicOnly, "pit\n", true},
		{"no timer_list", "", "tsc\n", true},
		{"no clocksource", apicOnly, "", true},
		{"broadcast none", "Broadcast device\nClock Event Device: <NULL>\n" + apicOnly, "tsc", false},
	} {
		if got := pitInUse(c.tl, c.cs); got != c.want {
			t.Errorf("%s: pitInUse = %v, want %v", c.name, got, c.want)
		}
	}
}
