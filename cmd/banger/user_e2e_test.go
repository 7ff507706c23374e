package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// groupUser is a non-root member of the banger group, made for one test.
type groupUser struct {
	name     string
	uid, gid uint32
	home     string
}

// ensureBangerGroup creates the banger group (the socket's group) if the
// host has none; the daemon must start after it exists.
func ensureBangerGroup(t *testing.T) uint32 {
	t.Helper()
	if out, err := exec.Command("groupadd", "-f", "banger").CombinedOutput(); err != nil {
		t.Fatalf("groupadd banger: %v %s", err, out)
	}
	g, err := user.LookupGroup("banger")
	if err != nil {
		t.Fatal(err)
	}
	gid, _ := strconv.Atoi(g.Gid)
	return uint32(gid)
}

func newGroupUser(t *testing.T, bangerGID uint32) *groupUser {
	t.Helper()
	name := fmt.Sprintf("bgt%d", time.Now().UnixNano()%1000000)
	home, err := os.MkdirTemp("/tmp", "bgt-home-")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("useradd", "-M", "-d", home, "-s", "/bin/sh", "-G", "banger", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd: %v %s", err, out)
	}
	t.Cleanup(func() {
		exec.Command("userdel", name).Run()
		os.RemoveAll(home)
	})
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	os.Chown(home, uid, gid)
	os.Chmod(home, 0o700)
	return &groupUser{name: name, uid: uint32(uid), gid: uint32(gid), home: home}
}

// userBin is the banger binary where any user may run it (the test
// binary's own directory is private to root).
func userBin(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "bgt-bin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	for _, n := range []string{"banger", "banger-init"} {
		b, err := os.ReadFile(filepath.Join(filepath.Dir(bangerBin), n))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "banger")
}

// runAs runs the CLI as u (a member of the banger group).
func (e *vmEnv) runAs(u *groupUser, bin string, bangerGID uint32, args ...string) (string, string, error) {
	cmd := exec.Command(bin, append([]string{"--socket", e.socket}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: u.uid, Gid: u.gid, Groups: []uint32{bangerGID}}}
	cmd.Env = []string{"HOME=" + u.home, "PATH=/usr/bin:/bin"}
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// A member of the banger group is a user, not root: they run and reach
// their own VMs with their own key, cannot see or touch another user's,
// and cannot make the daemon read what they could not read.
func TestNonRootGroupMember(t *testing.T) {
	needVMHost(t)
	gid := ensureBangerGroup(t) // before the daemon: it chowns its socket
	e := newVMEnv(t)
	alice, bob := newGroupUser(t, gid), newGroupUser(t, gid)
	bin := userBin(t)
	// The socket's directory and the test dirs above it must be
	// traversable (t.TempDir is private to root); the state dir stays 0700.
	for p := filepath.Dir(e.socket); p != "/tmp" && p != "/"; p = filepath.Dir(p) {
		os.Chmod(p, 0o755)
	}

	out, stderr, err := e.runAs(alice, bin, gid, "vm", "run", "--name", "alices", "--image", "busybox", "--", "sh", "-c", "id -u; cat /root/.ssh/authorized_keys | wc -l")
	if err != nil {
		t.Fatalf("vm run as %s: %v\n%s\n%s\ndaemon: %s", alice.name, err, out, stderr, tail(e.log.String(), 15))
	}
	if !strings.HasPrefix(out, "0\n") {
		t.Errorf("vm run as a group member: %q", out)
	}
	key, err := os.ReadFile(filepath.Join(alice.home, ".config", "banger", "id_ed25519"))
	if err != nil || !strings.Contains(string(key), "OPENSSH PRIVATE KEY") {
		t.Fatalf("no user key made for %s: %v", alice.name, err)
	}
	if fi, _ := os.Stat(filepath.Join(alice.home, ".config", "banger", "id_ed25519")); fi.Mode().Perm() != 0o600 || fi.Sys().(*syscall.Stat_t).Uid != alice.uid {
		t.Errorf("user key mode %v owner %d", fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Uid)
	}
	if out, stderr, err := e.runAs(alice, bin, gid, "vm", "exec", "alices", "--", "echo", "hi"); err != nil || out != "hi\n" {
		t.Fatalf("vm exec as owner: %v %q %s", err, out, stderr)
	}

	// Bob sees nothing of Alice's and can do nothing to it.
	out, _, err = e.runAs(bob, bin, gid, "vm", "ls", "-a", "-o", "json")
	var vms []map[string]any
	if err != nil || json.Unmarshal([]byte(out), &vms) != nil || len(vms) != 0 {
		t.Errorf("bob's vm ls: %v %q", err, out)
	}
	for _, args := range [][]string{{"vm", "exec", "alices", "--", "true"}, {"vm", "rm", "-f", "alices"}, {"vm", "stop", "alices"}, {"vm", "inspect", "alices"}} {
		_, stderr, err := e.runAs(bob, bin, gid, args...)
		if err == nil || !strings.Contains(stderr, "not found") {
			t.Errorf("bob: banger %s: %v %s", strings.Join(args, " "), err, stderr)
		}
	}
	// Completion lists running VMs the caller may see.
	if got := completions(t, e.daemonProc, "vm", "exec", ""); strings.Join(got, ",") != "alices" {
		t.Errorf("root's __complete vm exec: %v", got)
	}
	if out, _, _ := e.runAs(bob, bin, gid, "__complete", "vm", "exec", ""); strings.Contains(out, "alices") {
		t.Errorf("bob's completion offers alice's VM: %q", out)
	}
	// Root sees every VM.
	json.Unmarshal([]byte(e.mustRun(t, "vm", "ls", "-a", "-o", "json")), &vms)
	if len(vms) != 1 || vms[0]["name"] != "alices" {
		t.Errorf("root's vm ls: %v", vms)
	}

	// Host paths are read with the caller's rights.
	fifo := filepath.Join(alice.home, "fifo")
	syscall.Mkfifo(fifo, 0o644)
	os.Chown(fifo, int(alice.uid), int(alice.gid))
	link := filepath.Join(alice.home, "shadow-link")
	os.Symlink("/etc/shadow", link)
	for _, p := range []string{"/etc/shadow", "/root", fifo, "/dev/zero", link} {
		_, stderr, err := e.runAs(alice, bin, gid, "kernel", "import", "--name", "stolen", "--kernel", "/boot/../bin/true", "--initrd", p)
		if err == nil || !strings.Contains(stderr, p) {
			t.Errorf("kernel import --initrd %s as a group member: %v %s", p, err, stderr)
		}
		_, stderr, err = e.runAs(alice, bin, gid, "image", "import", p, "--name", "stolen")
		if err == nil {
			t.Errorf("image import %s as a group member succeeded: %s", p, stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(e.stateDir, "kernels", "stolen")); !os.IsNotExist(err) {
		t.Errorf("a refused import left kernels/stolen: %v", err)
	}
	// Forwards: loopback and ports from 1024 only; host-wide operations
	// are root's.
	for _, args := range [][]string{
		{"vm", "create", "--no-start", "--name", "p1", "-p", "0.0.0.0:18080:80"},
		{"vm", "create", "--no-start", "--name", "p2", "-p", "127.0.0.1:80:80"},
		{"ssh-key", "rotate"}, {"dns", "setup"}, {"image", "rm", "busybox"}, {"kernel", "rm", "debian-cloud-amd64"},
	} {
		if _, stderr, err := e.runAs(alice, bin, gid, args...); err == nil || !strings.Contains(stderr, "root") {
			t.Errorf("banger %s as a group member: %v %s", strings.Join(args, " "), err, stderr)
		}
	}
	if _, stderr, err := e.runAs(alice, bin, gid, "vm", "create", "--no-start", "--name", "p3", "-p", "127.0.0.1:18080:80"); err != nil {
		t.Errorf("a loopback forward from 1024 up as a group member: %v %s", err, stderr)
	}
	e.mustRun(t, "vm", "rm", "-f", "alices")
}
