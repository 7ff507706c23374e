package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"banger/internal/testfixture"
)

// importApp imports a busybox-based application image under name.
func (e *vmEnv) importApp(t *testing.T, name string, files map[string]string, config func(*v1.Config)) {
	t.Helper()
	img, err := testfixture.AppImage(name, files, config)
	if err != nil {
		t.Fatal(err)
	}
	layout := filepath.Join(t.TempDir(), name)
	if err := testfixture.WriteLayout(layout, img); err != nil {
		t.Fatal(err)
	}
	e.mustRun(t, "image", "import", layout, "--name", name)
}

// eventually retries cond until it is true or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s (last: %s)", what, timeout, last)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// TestVMMainProcess: an image whose Entrypoint is busybox httpd serves
// right after `vm create`, with no exec; its output is in `vm logs`; the
// image's Env reaches exec; killing the server stops the VM (restart no,
// exit code in inspect) or restarts it (restart always).
func TestVMMainProcess(t *testing.T) {
	e := newVMEnv(t)
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl not installed")
	}
	e.importApp(t, "web", map[string]string{"www/index.html": "hello from banger\n"}, func(c *v1.Config) {
		c.Entrypoint = []string{"/bin/sh", "-c", "echo app-starting $APPVAR; exec httpd -f -v -p 80 -h /www", "app"}
		c.Cmd = nil
		c.Env = append(c.Env, "APPVAR=fromimage")
	})
	e.mustRun(t, "vm", "create", "--image", "web", "--name", "web1")
	vm := e.inspect(t, "web1")
	ip := vm["guest_ip"].(string)
	if main, _ := vm["main"].(map[string]any); main == nil || main["restart"] != "no" || vm["init"] != "auto" || vm["init_running"] != "banger" {
		t.Fatalf("inspect: %v", vm)
	}
	get := func() (bool, string) {
		// curl, not busybox wget: that segfaults here (TESTING.md).
		out, err := exec.Command("ip", "netns", "exec", e.ns, "curl", "-sS", "-m", "5", "http://"+ip+"/").CombinedOutput()
		return err == nil && string(out) == "hello from banger\n", fmt.Sprintf("%q %v", out, err)
	}
	eventually(t, 20*time.Second, "httpd answers from the host", func() (bool, string) {
		ok, last := get()
		if !ok {
			logs, _, _ := e.run("vm", "logs", "web1")
			last += "\n" + tail(logs, 15)
		}
		return ok, last
	})
	if logs := e.mustRun(t, "vm", "logs", "web1"); !strings.Contains(logs, "app-starting fromimage") || !strings.Contains(logs, "main process started") {
		t.Fatalf("vm logs lacks the main process output:\n%s", logs)
	}
	if env := e.mustRun(t, "vm", "exec", "web1", "--", "env"); !strings.Contains(env, "APPVAR=fromimage") {
		t.Fatalf("image Env not in exec:\n%s", env)
	}
	if out := e.mustRun(t, "vm", "exec", "web1", "-e", "APPVAR=override", "-e", "B=2", "-w", "/tmp", "-u", "nobody", "--", "sh", "-c", "echo $APPVAR $B; pwd; id -u"); out != "override 2\n/tmp\n65534\n" {
		t.Fatalf("exec -e/-w/-u: %q", out)
	}
	// The server dies: with restart no the VM stops, and says why.
	e.run("vm", "exec", "web1", "--", "killall", "httpd")
	eventually(t, 60*time.Second, "VM stops after its main process", func() (bool, string) {
		vm = e.inspect(t, "web1")
		return vm["state"] == "stopped", vm["state"].(string)
	})
	if code, ok := vm["main_exit_code"].(float64); !ok || code != 143 {
		t.Fatalf("main_exit_code %v, want 143 (SIGTERM)", vm["main_exit_code"])
	}
	if out := e.mustRun(t, "vm", "inspect", "web1"); !strings.Contains(out, "Main exit code:  143") {
		t.Errorf("inspect:\n%s", out)
	}

	// restart always: the server comes back, the VM stays up.
	e.mustRun(t, "vm", "create", "--image", "web", "--name", "web2", "--restart", "always")
	pid := strings.TrimSpace(e.mustRun(t, "vm", "exec", "web2", "--", "pidof", "httpd"))
	e.mustRun(t, "vm", "exec", "web2", "--", "kill", pid)
	eventually(t, 30*time.Second, "httpd restarted", func() (bool, string) {
		out, _, _ := e.run("vm", "exec", "web2", "--", "pidof", "httpd")
		out = strings.TrimSpace(out)
		return out != "" && out != pid, out
	})
	ip2 := e.inspect(t, "web2")["guest_ip"].(string)
	ip = ip2
	eventually(t, 20*time.Second, "restarted httpd answers", get)
	if st := e.inspect(t, "web2")["state"]; st != "running" {
		t.Fatalf("state %v after a restart", st)
	}
	e.mustRun(t, "vm", "stop", "web2")
	if vm := e.inspect(t, "web2"); vm["main_exit_code"] != nil {
		t.Fatalf("a stopped VM reports a main exit: %v", vm["main_exit_code"])
	}
}

// TestVMRunEntrypointAndEnv: `vm run` runs the image's Entrypoint+Cmd in
// the foreground (a command after -- replaces Cmd, --entrypoint the
// Entrypoint), with -e, -w and -u.
func TestVMRunEntrypointAndEnv(t *testing.T) {
	e := newVMEnv(t)
	out := e.mustRun(t, "vm", "run", "--image", "busybox", "--rm", "-e", "A=1", "-w", "/tmp", "-u", "nobody", "--", "sh", "-c", "echo $A; pwd; id -u")
	if out != "1\n/tmp\n65534\n" {
		t.Fatalf("vm run -e/-w/-u: %q", out)
	}
	e.importApp(t, "echoapp", nil, func(c *v1.Config) {
		c.Entrypoint = []string{"echo", "entry"}
		c.Cmd = []string{"default"}
	})
	if out := e.mustRun(t, "vm", "run", "--image", "echoapp", "--rm"); out != "entry default\n" {
		t.Fatalf("vm run with no command: %q", out)
	}
	// A main process the guest cannot start fails the create loudly, and
	// so does --init image on an image without /sbin/init.
	if _, stderr, err := e.run("vm", "create", "--image", "busybox", "--name", "ghost", "-u", "ghost", "--", "sleep", "100"); err == nil || !strings.Contains(stderr, `user "ghost" not found`) {
		t.Errorf("create with an unknown user: %v %s", err, stderr)
	}
	if _, stderr, err := e.run("vm", "create", "--image", "busybox", "--name", "noinit", "--init", "image"); err == nil || !strings.Contains(stderr, "no executable /sbin/init") {
		t.Errorf("--init image without /sbin/init: %v %s", err, stderr)
	}
}
