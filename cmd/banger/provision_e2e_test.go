package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestVMProvision: --copy files are in place before the --provision
// scripts run; the scripts run in order, once (not again after stop and
// start), with their output in the create's progress and in `vm logs`; a
// failing script fails the create with its last lines and leaves the VM
// in state error, provisioning "failed" and not re-run at the next start.
func TestVMProvision(t *testing.T) {
	e := newVMEnv(t)
	dir := t.TempDir()
	write := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	os.MkdirAll(filepath.Join(dir, "app/conf"), 0o755)
	write("app/conf/settings", "answer=42\n", 0o640)
	write("app/run.sh", "#!/bin/sh\necho app-ran\n", 0o755)
	first := write("first.sh", "#!/bin/sh\nset -e\necho provision-first-line\n. /opt/app/conf/settings\necho \"run $answer\" >> /root/provisioned\n/opt/app/run.sh >> /root/provisioned\n", 0o755)
	second := write("second.sh", "#!/bin/sh\necho second >> /root/provisioned\nip -o -4 addr show eth0 | grep -q inet && echo net-up >> /root/provisioned\n", 0o755)

	_, stderr, err := e.run("vm", "create", "--image", "busybox", "--name", "prov",
		"--copy", filepath.Join(dir, "app")+":/opt/app", "--provision", first, "--provision", second)
	if err != nil {
		t.Fatalf("create: %v\n%s\n%s", err, stderr, tail(e.log.String(), 20))
	}
	if !strings.Contains(stderr, "provision-first-line") {
		t.Fatalf("the script's output is not in the create's progress:\n%s", stderr)
	}
	want := "run 42\napp-ran\nsecond\nnet-up\n"
	if out := e.mustRun(t, "vm", "exec", "prov", "--", "cat /root/provisioned"); out != want {
		t.Fatalf("after provisioning: %q, want %q", out, want)
	}
	if out := e.mustRun(t, "vm", "exec", "prov", "--", "stat -c %a /opt/app/conf/settings"); strings.TrimSpace(out) != "640" {
		t.Fatalf("copied file mode %q, want 640", out)
	}
	if vm := e.inspect(t, "prov"); vm["provision"] != "done" {
		t.Fatalf("provision state %v, want done", vm["provision"])
	}
	if logs := e.mustRun(t, "vm", "logs", "prov"); !strings.Contains(logs, "provision-first-line") {
		t.Fatalf("vm logs lacks the provisioning output:\n%s", tail(logs, 20))
	}
	e.mustRun(t, "vm", "stop", "prov")
	e.mustRun(t, "vm", "start", "prov")
	if out := e.mustRun(t, "vm", "exec", "prov", "--", "cat /root/provisioned"); out != want {
		t.Fatalf("after stop/start provisioning ran again: %q", out)
	}

	// A failing script.
	bad := write("bad.sh", "#!/bin/sh\necho before-failure\necho boom-line >&2\nexit 3\n", 0o755)
	_, stderr, err = e.run("vm", "create", "--image", "busybox", "--name", "badprov", "--provision", bad)
	if err == nil {
		t.Fatal("create with a failing script succeeded")
	}
	for _, w := range []string{"provisioning failed", "bad.sh exited with status 3", "boom-line", "before-failure"} {
		if !strings.Contains(stderr, w) {
			t.Fatalf("error lacks %q:\n%s", w, stderr)
		}
	}
	vm := e.inspect(t, "badprov")
	if vm["state"] != "error" || vm["provision"] != "failed" {
		t.Fatalf("failed provisioning: state %v provision %v, want error/failed", vm["state"], vm["provision"])
	}
	// Not re-run at the next start: the VM boots as it is.
	e.mustRun(t, "vm", "start", "badprov")
	if vm := e.inspect(t, "badprov"); vm["state"] != "running" || vm["provision"] != "failed" {
		t.Fatalf("restart after failed provisioning: %v %v", vm["state"], vm["provision"])
	}

	// Bounds are checked by the CLI and the daemon.
	huge := filepath.Join(dir, "huge")
	os.WriteFile(huge, make([]byte, 700<<10), 0o644)
	if _, stderr, err := e.run("vm", "create", "--image", "busybox", "--name", "toobig", "--copy", huge+":/root/huge"); err == nil || !strings.Contains(stderr, "banger vm cp") {
		t.Fatalf("oversized --copy: %v %s", err, stderr)
	}
}
