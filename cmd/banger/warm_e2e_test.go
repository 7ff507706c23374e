package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestVMWarmStart: the first create of a shape boots cold and leaves a
// boot snapshot; the second restores it (warm) with its own identity, its
// own env, a right clock and a working exec; another memory size, --cold
// and a rotated daemon key boot cold (the last replaces the stale
// snapshot).
func TestVMWarmStart(t *testing.T) {
	e := newVMEnv(t)
	start := func(name string) string { return e.inspect(t, name)["start"].(string) }
	warmSlots := func() []string {
		ents, _ := os.ReadDir(filepath.Join(e.stateDir, "warm"))
		var out []string
		for _, en := range ents {
			if !strings.HasPrefix(en.Name(), ".") {
				out = append(out, en.Name())
			}
		}
		return out
	}

	t0 := time.Now()
	e.mustRun(t, "vm", "create", "--warm", "--image", "busybox", "--name", "w1", "--memory", "256")
	t.Logf("first create (cold + warm snapshot) → ready: %s", time.Since(t0))
	if s := start("w1"); s != "cold" {
		t.Fatalf("first create of a shape started %q, want cold", s)
	}
	if sl := warmSlots(); len(sl) != 1 {
		t.Fatalf("warm slots after the first create: %v", sl)
	}
	e.mustRun(t, "vm", "exec", "w1", "--", "true")

	t0 = time.Now()
	e.mustRun(t, "vm", "create", "--warm", "--image", "busybox", "--name", "w2", "--memory", "256", "-e", "WARMVAR=w2only")
	t.Logf("warm create → ready: %s", time.Since(t0))
	t.Logf("stages:\n%s", stageLines(e.log.String(), "name=w2"))
	if s := start("w2"); s != "warm" {
		t.Fatalf("second create of the shape started %q, want warm", s)
	}
	a, b := e.guestIdentity(t, "w1"), e.guestIdentity(t, "w2")
	for k := range a {
		if a[k] == b[k] {
			t.Errorf("w1 and its warm twin w2 share their %s: %s", k, a[k])
		}
	}
	if b["hostname"] != "w2" || !strings.HasPrefix(b["ip"], e.inspect(t, "w2")["guest_ip"].(string)+"/") {
		t.Errorf("warm VM identity: %v", b)
	}
	out := e.mustRun(t, "vm", "exec", "w2", "--", "sh", "-c", "echo $WARMVAR; date +%s")
	f := strings.Fields(out)
	if len(f) != 2 || f[0] != "w2only" {
		t.Fatalf("warm VM's env: %q", out)
	}
	if g, _ := strconv.ParseInt(f[1], 10, 64); time.Now().Unix()-g > 3 || g-time.Now().Unix() > 3 {
		t.Fatalf("warm VM's clock %d is off the host's %d", g, time.Now().Unix())
	}
	if out := e.mustRun(t, "vm", "exec", "w1", "--", "sh", "-c", "echo ${WARMVAR:-none}"); out != "none\n" {
		t.Fatalf("w1 got w2's env: %q", out)
	}
	for _, p := range [][2]string{{"w2", "w1"}, {"w1", "w2"}} {
		if _, stderr, err := e.run("vm", "exec", p[0], "--", "ping", "-c", "1", "-W", "5", p[1]+".vm"); err != nil {
			t.Errorf("%s cannot ping %s.vm: %v %s", p[0], p[1], err, stderr)
		}
	}
	if doc := e.mustRun(t, "doctor"); !strings.Contains(doc, "1 boot snapshot(s)") {
		t.Errorf("doctor does not report the warm snapshot:\n%s", doc)
	}
	e.mustRun(t, "vm", "rm", "-f", "w2")

	// Another shape, and --cold, boot.
	e.mustRun(t, "vm", "create", "--warm", "--image", "busybox", "--name", "w3", "--memory", "320")
	if s := start("w3"); s != "cold" {
		t.Fatalf("create with another memory size started %q, want cold", s)
	}
	e.mustRun(t, "vm", "rm", "-f", "w3")
	if sl := warmSlots(); len(sl) != 2 {
		t.Fatalf("warm slots after a second shape: %v", sl)
	}
	if _, stderr, err := e.run("vm", "create", "--warm", "--cold", "--image", "busybox"); err == nil || !strings.Contains(stderr, "--warm and --cold") {
		t.Fatalf("--warm --cold: %v %s", err, stderr)
	}

	// A new daemon key makes the 256 MiB snapshot stale: cold again, and
	// a new snapshot replaces it.
	e.mustRun(t, "ssh-key", "rotate")
	e.mustRun(t, "vm", "create", "--warm", "--image", "busybox", "--name", "w4", "--memory", "256")
	if s := start("w4"); s != "cold" {
		t.Fatalf("create after a key rotation started %q, want cold", s)
	}
	if !strings.Contains(e.log.String(), "warm snapshot invalidated") || !strings.Contains(e.log.String(), "daemon_key") {
		t.Errorf("no invalidation naming daemon_key in the daemon's log")
	}
	e.mustRun(t, "vm", "rm", "-f", "w1")
	e.mustRun(t, "vm", "create", "--warm", "--image", "busybox", "--name", "w5", "--memory", "256")
	if s := start("w5"); s != "warm" {
		t.Fatalf("create after the new snapshot started %q, want warm", s)
	}
	e.mustRun(t, "vm", "exec", "w5", "--", "true")
	e.mustRun(t, "vm", "rm", "-f", "w4", "w5")
}
