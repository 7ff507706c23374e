package main

import (
	"bufio"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"banger/api"
)

// `banger events -o json` streams a VM's life in order: create, start,
// stop, rm, each with its time, id and name; a filter keeps others out.
func TestEventsFollowAVMsLife(t *testing.T) {
	e := newVMEnv(t)
	cmd := exec.Command(bangerBin, "--socket", e.socket, "events", "-o", "json", "--filter", "type=vm", "--filter", "name=ev")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	time.Sleep(300 * time.Millisecond) // subscribed before the first event
	e.mustRun(t, "vm", "create", "--no-start", "--name", "other")
	e.mustRun(t, "vm", "create", "--name", "ev")
	e.mustRun(t, "vm", "stop", "ev")
	e.mustRun(t, "vm", "rm", "ev")

	events := make(chan api.Event, 16)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var ev api.Event
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				events <- ev
			}
		}
		close(events)
	}()
	var actions []string
	timeout := time.After(30 * time.Second)
	for len(actions) < 4 {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("stream ended after %v", actions)
			}
			if ev.Name != "ev" || ev.ID == "" || ev.Type != "vm" {
				t.Errorf("event %+v: want type vm, name ev, an id", ev)
			}
			if _, err := time.Parse(time.RFC3339Nano, ev.Time); err != nil {
				t.Errorf("event time %q: %v", ev.Time, err)
			}
			actions = append(actions, ev.Action)
		case <-timeout:
			t.Fatalf("events so far: %v", actions)
		}
	}
	if got := strings.Join(actions, ","); got != "create,start,stop,rm" {
		t.Errorf("events %s, want create,start,stop,rm", got)
	}
}
