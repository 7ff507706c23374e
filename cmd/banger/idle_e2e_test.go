package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/api"
	"banger/internal/procstat"
)

// TestIdleStop: a VM with --idle-stop 20s runs on through a 40 s exec
// (idle time does not count while one is in progress), keeps its setting
// across a daemon kill and restart, and is stopped once idle for 20 s.
func TestIdleStop(t *testing.T) {
	e := newVMEnv(t)
	if _, stderr, err := e.run("vm", "create", "--image", "busybox", "--name", "idl", "--idle-stop", "1s"); err == nil || !strings.Contains(stderr, `"1s"`) {
		t.Fatalf("--idle-stop 1s (below the check interval): err %v, stderr %q; want an error naming it", err, stderr)
	}
	e.mustRun(t, "vm", "create", "--image", "busybox", "--name", "idl", "--idle-stop", "20s")
	vm := e.inspect(t, "idl")
	if vm["idle_stop"] != "20s" {
		t.Fatalf("inspect idle_stop = %v, want 20s", vm["idle_stop"])
	}
	if out := e.mustRun(t, "vm", "inspect", "idl"); !strings.Contains(out, "Idle stop:") {
		t.Fatalf("vm inspect table lacks the idle stop: %s", out)
	}
	pid := int(vm["pid"].(float64))
	logIdleCPU(t, pid)
	checkStats(t, e, "idl")

	// A 40 s exec: twice the idle time, and the guest sleeps (no CPU).
	ex := exec.Command(bangerBin, "--socket", e.socket, "vm", "exec", "idl", "--", "sleep", "40")
	var exOut strings.Builder
	ex.Stdout, ex.Stderr = &exOut, &exOut
	if err := ex.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ex.Wait() }()
	limit := time.After(120 * time.Second)
	for waiting := true; waiting; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("vm exec sleep 40: %v: %s\ndaemon log: %s", err, exOut.String(), tail(e.log.String(), 20))
			}
			waiting = false
		case <-time.After(2 * time.Second):
			if st := e.vmState(t, "idl"); st != "running" {
				t.Fatalf("state %s while an exec runs, want running\ndaemon log: %s", st, tail(e.log.String(), 20))
			}
		case <-limit:
			t.Fatal("vm exec sleep 40 still running after 120 s")
		}
	}
	if st := e.vmState(t, "idl"); st != "running" {
		t.Fatalf("state %s right after the exec, want running", st)
	}

	// The setting lives in the VM's record: a killed and restarted daemon
	// adopts the VM and still stops it.
	e.cmd.Process.Signal(syscall.SIGKILL)
	e.cmd.Wait()
	e.daemonProc = startDaemonProcArgs(t, e.stateDir, e.runDir, "--netns", e.ns)
	if st := e.vmState(t, "idl"); st != "running" {
		t.Fatalf("state %s after the daemon restart, want running (adopted)", st)
	}
	if got := e.inspect(t, "idl")["idle_stop"]; got != "20s" {
		t.Fatalf("idle_stop after the daemon restart = %v, want 20s", got)
	}
	start := time.Now()
	for st := ""; st != "stopped"; st = e.vmState(t, "idl") {
		if time.Since(start) > 120*time.Second {
			t.Fatalf("state %s 120 s after the restart; an idle VM with --idle-stop 20s should be stopped\ndaemon log: %s", st, tail(e.log.String(), 30))
		}
		time.Sleep(time.Second)
	}
	if time.Since(start) < 20*time.Second {
		t.Fatalf("stopped %s after the daemon restart, before its 20 s of idle", time.Since(start))
	}
	if !strings.Contains(e.log.String(), "stopped idle VM") {
		t.Fatalf("daemon log does not say why the VM stopped: %s", tail(e.log.String(), 20))
	}
	t.Logf("stopped %s after the daemon restart (idle-stop 20s)", time.Since(start).Round(time.Second))
}

// logIdleCPU logs how much host CPU the idle guest's VMM uses: the
// figure idleCPUFraction is set against (docs, BENCHMARKS.md).
func logIdleCPU(t *testing.T, pid int) {
	a, err := procstat.CPUTime(pid)
	if err != nil {
		t.Fatalf("cpu time of the VMM (pid %d): %v", pid, err)
	}
	t0 := time.Now()
	time.Sleep(6 * time.Second)
	b, _ := procstat.CPUTime(pid)
	frac := float64(b-a) / float64(time.Since(t0))
	fmt.Fprintf(os.Stderr, "idle guest VMM cpu: %.1f%% of one host CPU\n", 100*frac)
	t.Logf("idle guest VMM cpu: %.1f%% of one host CPU over 6 s", 100*frac)
}

// checkStats: `vm stats --no-stream -o json` reads a running VM's use
// from its VMM, disks, tap and guest; the table names it.
func checkStats(t *testing.T, e *vmEnv, name string) {
	t.Helper()
	var st []api.VMStats
	if err := json.Unmarshal([]byte(e.mustRun(t, "vm", "stats", name, "--no-stream", "-o", "json")), &st); err != nil {
		t.Fatal(err)
	}
	if len(st) != 1 {
		t.Fatalf("vm stats %s: %d entries, want 1", name, len(st))
	}
	s := st[0]
	t.Logf("vm stats: %+v", s)
	if s.Name != name || s.State != "running" || s.CPUSeconds <= 0 || s.CPUPercent < 0 ||
		s.MemRSSBytes < 1<<20 || s.MemLimitBytes != 512<<20 || s.DiskWorkBytes <= 0 {
		t.Fatalf("vm stats %s = %+v: want running, CPU time, RSS over 1 MiB, 512 MiB limit, work disk bytes", name, s)
	}
	if s.GuestMemUsedBytes <= 0 || s.GuestMemUsedBytes > s.MemLimitBytes {
		t.Fatalf("guest memory used %d: want between 0 and the %d limit", s.GuestMemUsedBytes, s.MemLimitBytes)
	}
	// The tap lives in the daemon's namespace: a counter read anywhere
	// else (the root namespace has no such tap) would be 0. The guest has
	// received its neighbour traffic by now.
	if s.NetRxBytes == 0 {
		t.Fatalf("net_rx_bytes 0: the tap's counters were not read in the daemon's namespace")
	}
	if out := e.mustRun(t, "vm", "stats", "--no-stream"); !strings.Contains(out, name) || !strings.Contains(out, "CPU %") {
		t.Fatalf("vm stats table: %s", out)
	}
	if _, stderr, err := e.run("vm", "stats", "nosuchvm", "--no-stream"); err == nil || !strings.Contains(stderr, "nosuchvm") {
		t.Fatalf("vm stats of a missing VM: err %v, %q", err, stderr)
	}
}
