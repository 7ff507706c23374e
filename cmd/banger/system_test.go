package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"banger/internal/sysinstall"
	"banger/internal/testenv"
)

// TestUnitFlagsAreDaemonFlags: the unit's ExecStart parses as `banger
// daemon` flags, so a renamed flag breaks this test, not the service.
func TestUnitFlagsAreDaemonFlags(t *testing.T) {
	m := regexp.MustCompile(`(?m)^ExecStart=(\S+) daemon (.*)$`).FindStringSubmatch(sysinstall.Unit("/usr/local"))
	if m == nil {
		t.Fatal("no ExecStart=... daemon line in the unit")
	}
	cmd := newDaemonCmd(&app{})
	if err := cmd.ParseFlags(strings.Fields(m[2])); err != nil {
		t.Fatalf("ExecStart flags %q: %v", m[2], err)
	}
	for flag, want := range map[string]string{"state-dir": sysinstall.StateDir, "runtime-dir": sysinstall.RuntimeDir} {
		if got, _ := cmd.Flags().GetString(flag); got != want {
			t.Errorf("--%s = %q, want %q", flag, got, want)
		}
	}
}

// TestSystemInstallCLI runs the built banger's `system install` and
// `system uninstall` into a temp root, as on this systemd-less machine:
// the binaries (the running banger and its banger-init), the group and the
// unit land there, nothing is started and the output says so.
func TestSystemInstallCLI(t *testing.T) {
	testenv.RequireRoot(t, "to create the banger group in the temp root (groupadd --root)")
	testenv.RequireTool(t, "groupadd", "groupdel")
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/group"), []byte("root:x:0:\n"), 0o644)
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bangerBin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("banger %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	out := run("system", "install", "--root", root, "--prefix", "/opt/b")
	if !strings.Contains(out, "banger.service is not enabled or started") {
		t.Errorf("install output does not say nothing was started:\n%s", out)
	}
	want, _ := os.ReadFile(bangerBin)
	if got, err := os.ReadFile(filepath.Join(root, "opt/b/bin/banger")); err != nil || len(got) != len(want) {
		t.Errorf("installed banger: %d bytes, %v; want the running binary (%d bytes)", len(got), err, len(want))
	}
	if _, err := os.Stat(filepath.Join(root, "opt/b/lib/banger/banger-init")); err != nil {
		t.Errorf("banger-init not installed: %v", err)
	}
	unit, err := os.ReadFile(filepath.Join(root, "etc/systemd/system/banger.service"))
	if err != nil || !strings.Contains(string(unit), "ExecStart=/opt/b/bin/banger daemon") {
		t.Errorf("unit: %v\n%s", err, unit)
	}
	if g, _ := os.ReadFile(filepath.Join(root, "etc/group")); !strings.Contains(string(g), "\nbanger:x:") {
		t.Errorf("no banger group in %s/etc/group:\n%s", root, g)
	}
	out = run("system", "uninstall", "--root", root, "--prefix", "/opt/b")
	for _, p := range []string{"opt/b/bin/banger", "etc/systemd/system/banger.service"} {
		if _, err := os.Stat(filepath.Join(root, p)); err == nil {
			t.Errorf("uninstall left /%s\n%s", p, out)
		}
	}
	// Bad input: a relative root is refused, naming it.
	if out, err := exec.Command(bangerBin, "system", "install", "--root", "rel").CombinedOutput(); err == nil || !strings.Contains(string(out), `"rel"`) {
		t.Errorf("relative --root: %v\n%s", err, out)
	}
}
