package main

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"banger/internal/instance"
	"banger/internal/testenv"
)

// TestSecondDaemonLeavesFirstsVMs: a daemon on another state dir, in the
// same network namespace, started and stopped twice while the first
// daemon's two VMs run — once beside it (its own runtime dir), once in
// the first's runtime dir while the first is stopped (the VMs keep
// running) — removes none of their taps, NAT members, filter entries or
// VMM processes: both still answer vm exec afterwards. On a daemon whose
// taps, tables and VM runtime dirs were not named per state dir, the
// second daemon's orphan cleanup took all of them.
func TestSecondDaemonLeavesFirstsVMs(t *testing.T) {
	testenv.RequireTool(t, "nft")
	e := newVMEnv(t)
	e.mustRun(t, "vm", "create", "--image", "busybox", "--nat", "--name", "i1")
	e.mustRun(t, "vm", "create", "--image", "busybox", "--name", "i2")
	ip1, ip2 := e.inspect(t, "i1")["guest_ip"].(string), e.inspect(t, "i2")["guest_ip"].(string)
	mine := e.inst()

	check := func(when string) {
		t.Helper()
		links := e.nsRun(t, "ip", "-o", "link")
		taps := 0
		for _, f := range strings.Fields(links) {
			if mine.OwnsTap(strings.TrimSuffix(strings.Split(f, "@")[0], ":")) {
				taps++
			}
		}
		if taps != 2 {
			t.Fatalf("%s: %d taps of the first daemon, want 2:\n%s", when, taps, links)
		}
		if set := e.nsRun(t, "nft", "list", "set", "inet", mine.Table, "nat_guests"); !strings.Contains(set, ip1) {
			t.Fatalf("%s: NAT set lost %s:\n%s", when, ip1, set)
		}
		if set := e.nsRun(t, "nft", "list", "set", "bridge", mine.Table, "guest_addrs"); !strings.Contains(set, ip1) || !strings.Contains(set, ip2) {
			t.Fatalf("%s: filter entries lost:\n%s", when, set)
		}
		for _, vm := range []string{"i1", "i2"} {
			if out := e.mustRun(t, "vm", "exec", vm, "--", "echo", "ok"); out != "ok\n" {
				t.Fatalf("%s: vm exec %s: %q", when, vm, out)
			}
		}
	}
	check("before")

	otherState := filepath.Join(t.TempDir(), "other-state")
	if o := instance.For(otherState); o.Table == mine.Table || o.TapPrefix == mine.TapPrefix || o.VMRunDir == mine.VMRunDir {
		t.Fatalf("the two state dirs share names: %+v %+v", o, mine)
	}
	stop := func(d *daemonProc) {
		d.cmd.Process.Signal(syscall.SIGTERM)
		d.cmd.Wait()
	}

	// Beside the first daemon, in its namespace.
	stop(startDaemonProcArgs(t, otherState, filepath.Join(t.TempDir(), "run"), "--netns", e.ns))
	check("after a second daemon ran beside the first")

	// In the first's runtime dir while the first is down.
	stop(e.daemonProc)
	second := startDaemonProcArgs(t, otherState, e.runDir, "--netns", e.ns)
	if strings.Contains(second.log.String(), "orphan") {
		t.Errorf("second daemon cleaned up orphans:\n%s", second.log)
	}
	stop(second)
	if strings.Contains(second.log.String(), "killing orphan VMM") || strings.Contains(second.log.String(), "removing orphan tap") {
		t.Fatalf("second daemon touched the first's VMs:\n%s", second.log)
	}
	e.daemonProc = startDaemonProcArgs(t, e.stateDir, e.runDir, "--netns", e.ns)
	check("after a second daemon ran in the first's runtime dir")
	e.mustRun(t, "vm", "rm", "-f", "i1", "i2")
}
