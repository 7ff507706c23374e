package daemon

import (
	"errors"
	"testing"
	"time"

	"banger/internal/model"
)

func TestParseIdleStop(t *testing.T) {
	if d, err := parseIdleStop(""); d != 0 || err != nil {
		t.Fatalf(`"" = %v, %v`, d, err)
	}
	if d, err := parseIdleStop("10m"); d != 10*time.Minute || err != nil {
		t.Fatalf(`"10m" = %v, %v`, d, err)
	}
	for _, bad := range []string{"soon", "-5m", "0s", "1s"} {
		if _, err := parseIdleStop(bad); err == nil {
			t.Fatalf("%q: no error", bad)
		}
	}
}

// TestIdleFor walks the tracker through the signals idle-stop reads.
func TestIdleFor(t *testing.T) {
	var tr idleTracker
	rec := model.VMRecord{ID: "v", Runtime: model.VMRuntime{PID: 100}}
	t0 := time.Now()
	step := idleInterval
	at := func(n int) time.Time { return t0.Add(time.Duration(n) * step) }
	cpuIdle := func(n int) time.Duration { return time.Duration(n) * step / 100 } // 1 % of a CPU

	if got := tr.idleFor(rec, at(0), 0, time.Time{}, cpuIdle(0), nil); got != 0 {
		t.Fatalf("first look: idle %v, want 0 (a boot starts the clock)", got)
	}
	if got := tr.idleFor(rec, at(3), 0, time.Time{}, cpuIdle(3), nil); got != 3*step {
		t.Fatalf("1%% CPU: idle %v, want %v (under the threshold)", got, 3*step)
	}
	// A busy guest: half a CPU over the last interval.
	if got := tr.idleFor(rec, at(4), 0, time.Time{}, cpuIdle(3)+step/2, nil); got != 0 {
		t.Fatalf("50%% CPU: idle %v, want 0", got)
	}
	// A call in progress keeps it busy however long it takes.
	end := tr.begin("v")
	base := cpuIdle(3) + step/2
	for n := 5; n < 10; n++ {
		if got := tr.idleFor(rec, at(n), 0, time.Time{}, base, nil); got != 0 {
			t.Fatalf("during a call: idle %v at step %d", got, n)
		}
	}
	end()
	end() // a second end is harmless
	if tr.busy("v") {
		t.Fatal("busy after the call ended")
	}
	// An open port-forward connection counts, and so does its close time.
	if got := tr.idleFor(rec, at(20), 2, time.Time{}, base, nil); got != 0 {
		t.Fatalf("forwarded connection open: idle %v", got)
	}
	if got := tr.idleFor(rec, at(22), 0, at(21), base, nil); got != step {
		t.Fatalf("forward closed one step ago: idle %v, want %v", got, step)
	}
	// An unreadable CPU time (the VMM just exited) changes nothing.
	if got := tr.idleFor(rec, at(23), 0, time.Time{}, 0, errors.New("gone")); got != 2*step {
		t.Fatalf("cpu unreadable: idle %v, want %v", got, 2*step)
	}
	// A new VMM process is a new boot: the clock starts again.
	rec.Runtime.PID = 101
	if got := tr.idleFor(rec, at(30), 0, time.Time{}, 0, nil); got != 0 {
		t.Fatalf("new boot: idle %v, want 0", got)
	}
}
