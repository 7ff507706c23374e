package sysinstall

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"banger/internal/testenv"
)

// section returns the lines of unit section name ("[Service]").
func section(unit, name string) []string {
	var out []string
	in := false
	for _, l := range strings.Split(unit, "\n") {
		if strings.HasPrefix(l, "[") {
			in = l == name
			continue
		}
		if in && l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

func TestUnit(t *testing.T) {
	for _, prefix := range []string{"/usr/local", "/opt/banger"} {
		u := Unit(prefix)
		want := map[string][]string{
			"[Unit]": {"Description=banger: disposable microVMs", "After=network.target"},
			"[Service]": {
				"Type=simple",
				"ExecStart=" + prefix + "/bin/banger daemon --state-dir /var/lib/banger --runtime-dir /run/banger",
				"Environment=BANGER_INIT=" + prefix + "/lib/banger/banger-init",
				"RuntimeDirectory=banger", "RuntimeDirectoryMode=0755", "RuntimeDirectoryPreserve=yes",
				"KillMode=process", "StateDirectory=banger", "StateDirectoryMode=0700",
				"Restart=on-failure", "RestartSec=2s", "TimeoutStopSec=30s", "TasksMax=infinity", "LimitNOFILE=1048576",
			},
			"[Install]": {"WantedBy=multi-user.target"},
		}
		for sec, lines := range want {
			if got := section(u, sec); strings.Join(got, "\n") != strings.Join(lines, "\n") {
				t.Errorf("prefix %s: %s is\n%s\nwant\n%s", prefix, sec, strings.Join(got, "\n"), strings.Join(lines, "\n"))
			}
		}
		// The directories systemd makes are the daemon's defaults.
		if !strings.Contains(u, "RuntimeDirectory=banger\n") || filepath.Base(RuntimeDir) != "banger" || filepath.Base(StateDir) != "banger" ||
			!strings.HasPrefix(RuntimeDir, "/run/") || !strings.HasPrefix(StateDir, "/var/lib/") {
			t.Errorf("RuntimeDirectory/StateDirectory do not name %s and %s", RuntimeDir, StateDir)
		}
	}
}

// TestUnitVerifies runs systemd's own checker over the unit (it needs the
// ExecStart binary to exist: a temp prefix holds one).
func TestUnitVerifies(t *testing.T) {
	testenv.RequireTool(t, "systemd-analyze")
	prefix := t.TempDir()
	os.MkdirAll(filepath.Join(prefix, "bin"), 0o755)
	os.WriteFile(filepath.Join(prefix, "bin/banger"), []byte("#!/bin/sh\n"), 0o755)
	unit := filepath.Join(t.TempDir(), UnitName)
	os.WriteFile(unit, []byte(Unit(prefix)), 0o644)
	out, err := exec.Command("systemd-analyze", "verify", "--man=no", unit).CombinedOutput()
	// Without systemd as PID 1 verify still parses the file: every line it
	// writes about it (unknown key, bad value) is a fault.
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, unit) {
			t.Errorf("systemd-analyze verify: %s", l)
		}
	}
	if err != nil {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// env is a temp root with an /etc/group, two binaries to install, and a
// command runner that runs groupadd/groupdel for real (on the temp root)
// and records systemctl calls, answering them with systemctlErr.
type env struct {
	root, banger, init string
	out                bytes.Buffer
	calls              []string
	systemctlErr       map[string]error
}

func newEnv(t *testing.T) *env {
	testenv.RequireRoot(t, "to run groupadd --root (chroot)")
	testenv.RequireTool(t, "groupadd", "groupdel")
	e := &env{root: t.TempDir(), systemctlErr: map[string]error{}}
	os.MkdirAll(filepath.Join(e.root, "etc"), 0o755)
	os.WriteFile(filepath.Join(e.root, "etc/group"), []byte("root:x:0:\n"), 0o644)
	src := t.TempDir()
	e.banger, e.init = filepath.Join(src, "banger"), filepath.Join(src, "banger-init")
	os.WriteFile(e.banger, []byte("banger binary"), 0o700)
	os.WriteFile(e.init, []byte("init binary"), 0o700)
	return e
}

func (e *env) opts(systemd, asHost bool) Options {
	return Options{
		Root: e.root, Prefix: "/opt/bng", Banger: e.banger, Init: e.init, Out: &e.out,
		Systemd: func() bool { return systemd }, asHost: asHost,
		Run: func(ctx context.Context, name string, args ...string) error {
			call := name + " " + strings.Join(args, " ")
			e.calls = append(e.calls, call)
			if name == "systemctl" {
				return e.systemctlErr[args[0]]
			}
			if out, err := exec.CommandContext(ctx, name, args...).CombinedOutput(); err != nil {
				return errors.New(call + ": " + string(out))
			}
			return nil
		},
	}
}

func (e *env) systemctlCalls() []string {
	var out []string
	for _, c := range e.calls {
		if strings.HasPrefix(c, "systemctl ") {
			out = append(out, strings.TrimPrefix(c, "systemctl "))
		}
	}
	return out
}

func (e *env) exists(p string) bool { _, err := os.Stat(filepath.Join(e.root, p)); return err == nil }

func (e *env) hasGroup(t *testing.T) bool {
	data, err := os.ReadFile(filepath.Join(e.root, "etc/group"))
	if err != nil {
		t.Fatal(err)
	}
	return regexp.MustCompile(`(?m)^banger:x:\d+:$`).Match(data)
}

// TestInstallIntoRoot: install into another root puts the binaries, the
// group and the unit there and starts nothing (even with systemd around);
// uninstall removes them and keeps the state, --purge removes that and the
// group too.
func TestInstallIntoRoot(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for i := 0; i < 2; i++ { // a second install changes nothing
		if err := Install(ctx, e.opts(true, false)); err != nil {
			t.Fatalf("install %d: %v", i, err)
		}
	}
	for p, want := range map[string]string{"opt/bng/bin/banger": "banger binary", "opt/bng/lib/banger/banger-init": "init binary",
		"etc/systemd/system/banger.service": Unit("/opt/bng")} {
		data, err := os.ReadFile(filepath.Join(e.root, p))
		if err != nil || string(data) != want {
			t.Errorf("/%s: %q, %v; want %q", p, data, err, want)
		}
	}
	for _, p := range []string{"opt/bng/bin/banger", "opt/bng/lib/banger/banger-init"} {
		if st, _ := os.Stat(filepath.Join(e.root, p)); st == nil || st.Mode().Perm() != 0o755 {
			t.Errorf("/%s mode: %v, want 0755", p, st)
		}
	}
	if !e.hasGroup(t) {
		t.Error("no banger group in the root's /etc/group")
	}
	if n := strings.Count(strings.Join(e.calls, "\n"), "groupadd"); n != 1 {
		t.Errorf("groupadd ran %d times over two installs, want 1: %q", n, e.calls)
	}
	if c := e.systemctlCalls(); len(c) > 0 {
		t.Errorf("systemctl ran for an install into another root: %q", c)
	}
	if !strings.Contains(e.out.String(), "installed into "+e.root+": banger.service is not enabled or started") {
		t.Errorf("output does not say the unit was not started:\n%s", e.out.String())
	}

	os.MkdirAll(filepath.Join(e.root, "var/lib/banger/vms"), 0o700)
	if err := Uninstall(ctx, e.opts(true, false), false); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"opt/bng/bin/banger", "opt/bng/lib/banger", "etc/systemd/system/banger.service"} {
		if e.exists(p) {
			t.Errorf("uninstall left /%s", p)
		}
	}
	if !e.exists("var/lib/banger/vms") || !e.hasGroup(t) {
		t.Error("uninstall without --purge removed the state or the group")
	}
	if !strings.Contains(e.out.String(), "kept the state in") {
		t.Errorf("uninstall does not say it kept the state:\n%s", e.out.String())
	}
	if err := Uninstall(ctx, e.opts(true, false), true); err != nil {
		t.Fatal(err)
	}
	if e.exists("var/lib/banger") || e.hasGroup(t) {
		t.Error("uninstall --purge left the state or the group")
	}
}

// TestInstallWithoutSystemd is this CI machine's case: no systemd as PID 1.
// The unit is installed, not enabled or started, and the output says so
// and how to start the daemon instead; systemctl never runs.
func TestInstallWithoutSystemd(t *testing.T) {
	e := newEnv(t)
	if err := Install(context.Background(), e.opts(false, true)); err != nil {
		t.Fatal(err)
	}
	if !e.exists("etc/systemd/system/banger.service") || !e.exists("opt/bng/bin/banger") || !e.hasGroup(t) {
		t.Error("unit, binary or group missing")
	}
	if c := e.systemctlCalls(); len(c) > 0 {
		t.Errorf("systemctl ran without systemd: %q", c)
	}
	for _, want := range []string{"systemd is not running on this host", "NOT enabled or started",
		"/opt/bng/bin/banger daemon --state-dir /var/lib/banger --runtime-dir /run/banger &", "usermod -aG banger USER"} {
		if !strings.Contains(e.out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, e.out.String())
		}
	}
	if err := Uninstall(context.Background(), e.opts(false, true), false); err != nil {
		t.Fatal(err)
	}
	if c := e.systemctlCalls(); len(c) > 0 || e.exists("etc/systemd/system/banger.service") {
		t.Errorf("uninstall without systemd: systemctl %q, unit left %v", c, e.exists("etc/systemd/system/banger.service"))
	}
}

// TestInstallWithSystemd checks the systemctl steps where systemd runs.
// systemd is not PID 1 on the test machine, so systemctl is the recording
// double; groupadd and the files are real.
func TestInstallWithSystemd(t *testing.T) {
	ctx := context.Background()
	t.Run("fresh", func(t *testing.T) {
		e := newEnv(t)
		e.systemctlErr["is-active"] = errors.New("inactive")
		if err := Install(ctx, e.opts(true, true)); err != nil {
			t.Fatal(err)
		}
		want := "is-active --quiet banger.service|daemon-reload|enable banger.service|start banger.service"
		if got := strings.Join(e.systemctlCalls(), "|"); got != want {
			t.Errorf("systemctl calls %q, want %q", got, want)
		}
		if !strings.Contains(e.out.String(), "enabled and started banger.service") {
			t.Errorf("output:\n%s", e.out.String())
		}
		e.calls = nil
		if err := Uninstall(ctx, e.opts(true, true), false); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(e.systemctlCalls(), "|"); got != "disable --now banger.service|daemon-reload" {
			t.Errorf("uninstall systemctl calls %q", got)
		}
	})
	t.Run("running", func(t *testing.T) { // the new binary needs a restart
		e := newEnv(t)
		if err := Install(ctx, e.opts(true, true)); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(e.systemctlCalls(), "|"); !strings.HasSuffix(got, "enable banger.service|restart banger.service") {
			t.Errorf("systemctl calls %q, want a restart", got)
		}
	})
	t.Run("hand-started daemon", func(t *testing.T) {
		e := newEnv(t)
		e.systemctlErr["is-active"] = errors.New("inactive")
		sock := filepath.Join(e.root, "run/banger/banger.sock")
		os.MkdirAll(filepath.Dir(sock), 0o755)
		ln, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		if err := Install(ctx, e.opts(true, true)); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(e.systemctlCalls(), "|"); strings.Contains(got, "start") {
			t.Errorf("started the unit while another daemon serves the socket: %q", got)
		}
		if !strings.Contains(e.out.String(), "did NOT start it: a banger daemon that systemd does not manage serves") {
			t.Errorf("output:\n%s", e.out.String())
		}
	})
	t.Run("start fails", func(t *testing.T) {
		e := newEnv(t)
		e.systemctlErr["is-active"] = errors.New("inactive")
		e.systemctlErr["start"] = errors.New("Job for banger.service failed")
		err := Install(ctx, e.opts(true, true))
		if err == nil || !strings.Contains(err.Error(), "journalctl -u banger") {
			t.Errorf("want an error pointing at the journal, got %v", err)
		}
	})
}

func TestBadInput(t *testing.T) {
	if err := Install(context.Background(), Options{Root: "rel"}); err == nil || !strings.Contains(err.Error(), `--root "rel"`) {
		t.Errorf("relative root: %v", err)
	}
	testenv.RequireRoot(t, "to reach the binary checks")
	root := t.TempDir()
	err := Install(context.Background(), Options{Root: root, Banger: filepath.Join(root, "nope"), Init: filepath.Join(root, "nope2")})
	if err == nil || !strings.Contains(err.Error(), "make build") {
		t.Errorf("missing binary: %v", err)
	}
	if ents, _ := os.ReadDir(root); len(ents) != 0 {
		t.Errorf("a refused install left %d entries in the root", len(ents))
	}
}
