package main

import (
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestVMPauseResume: a paused VM's counter does not advance, exec fails at
// once naming `vm resume`, a restarted daemon sees it paused; after resume
// exec answers, the counter runs and the guest clock is the host's.
func TestVMPauseResume(t *testing.T) {
	e := newVMEnv(t)
	e.mustRun(t, "vm", "create", "--image", "busybox", "--name", "pz", "--memory", "256")
	e.mustRun(t, "vm", "exec", "pz", "--", "sh", "-c",
		"(i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.2; done) </dev/null >/dev/null 2>&1 &")
	time.Sleep(time.Second)
	e.mustRun(t, "vm", "pause", "pz")
	if st := e.inspect(t, "pz")["state"]; st != "paused" {
		t.Fatalf("state after pause: %v", st)
	}
	start := time.Now()
	_, stderr, err := e.run("vm", "exec", "pz", "--", "true")
	if err == nil || !strings.Contains(stderr, "vm resume pz") || time.Since(start) > 5*time.Second {
		t.Fatalf("exec in a paused VM: %v after %s: %s", err, time.Since(start), stderr)
	}
	if ls := e.mustRun(t, "vm", "ls"); !strings.Contains(ls, "paused") {
		t.Fatalf("vm ls: %s", ls)
	}
	// The daemon restarts; the VM stays paused, as QEMU says.
	e.restartDaemon(t)
	if st := e.inspect(t, "pz")["state"]; st != "paused" {
		t.Fatalf("state after a daemon restart: %v", st)
	}
	time.Sleep(3 * time.Second) // paused: the counter must not move meanwhile

	t0 := time.Now()
	e.mustRun(t, "vm", "resume", "pz")
	t.Logf("resume → agent answered: %s", time.Since(t0))
	out := e.mustRun(t, "vm", "exec", "pz", "--", "sh", "-c", "cat /tmp/count; sleep 1; cat /tmp/count; date +%s")
	f := strings.Fields(out)
	if len(f) != 3 {
		t.Fatalf("exec after resume: %q", out)
	}
	before, _ := strconv.Atoi(f[0])
	after, _ := strconv.Atoi(f[1])
	guest, _ := strconv.ParseInt(f[2], 10, 64)
	// 1 s of paused guest before the pause ≈ 5 ticks; 3+ s paused must not
	// show (≤ 10 ticks of slack for a loaded TCG guest).
	if before > 12 || after <= before {
		t.Fatalf("counter: %d at resume, %d a second later (it must stand still while paused and run after)", before, after)
	}
	if d := time.Now().Unix() - guest; d > 3 || d < -3 {
		t.Fatalf("guest clock %d s off the host's after resume", d)
	}
	e.mustRun(t, "vm", "pause", "pz")
	e.mustRun(t, "vm", "stop", "pz")
	if st := e.inspect(t, "pz")["state"]; st != "stopped" {
		t.Fatalf("stop of a paused VM: %v", st)
	}
	e.mustRun(t, "vm", "rm", "pz")
}

// restartDaemon kills the daemon (SIGKILL: nothing of it is tidied) and
// starts another on the same state, in the same namespace.
func (e *vmEnv) restartDaemon(t *testing.T) {
	t.Helper()
	e.cmd.Process.Signal(syscall.SIGKILL)
	e.cmd.Wait()
	e.daemonProc = startDaemonProcArgs(t, e.stateDir, e.runDir, "--netns", e.ns)
}
