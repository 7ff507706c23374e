// Package vmhost starts a real banger daemon for a test, in a network
// namespace the test made, with the default kernel pulled and the busybox
// fixture image imported as "busybox" (the daemon's default image). Tests
// outside cmd/banger (the SDK's, in package client_test) use it; a
// missing prerequisite skips the test, and fails it under CI=true
// (testenv).
//
// Nothing it does touches the host's interfaces: the daemon that boots
// VMs runs inside the namespace (bridge, taps, NAT there); the one that
// pulls the kernel runs in the root namespace only for that download and
// never starts a VM, so it never creates its bridge.
package vmhost

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"banger/internal/testenv"
	"banger/internal/testfixture"
)

// Kernel is the catalog kernel the daemon gets.
const Kernel = "debian-cloud-amd64"

// Daemon is a running daemon in its own network namespace.
type Daemon struct {
	Socket   string // its unix socket
	StateDir string
	NS       string // the network namespace
	Bin      string // the banger binary it runs
	log      *logBuffer
}

// Log is what the daemon wrote so far (stderr), for failure messages.
func (d *Daemon) Log() string { return d.log.String() }

// Require skips the test (fails under CI=true) unless this host can boot
// VMs: root, qemu, e2fsprogs, ip, and the busybox-static fixture.
func Require(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t, "to boot VMs (bridge, taps, netns)")
	testenv.RequireTool(t, "qemu-system-x86_64", "mkfs.ext4", "ip", "apt-get", "dpkg-deb", "go")
	testenv.RequireFile(t, testfixture.BusyboxPath, "busybox-static")
}

// Start builds banger and banger-init, pulls the default kernel, and
// starts a daemon in a fresh network namespace; everything is removed
// when the test ends.
func Start(t *testing.T) *Daemon {
	t.Helper()
	Require(t)
	d, dir := prepare(t)
	// The kernel, pulled by a daemon in the root namespace (the download
	// needs the host's network), which then exits; the state dir is the
	// one the namespaced daemon serves.
	pull := d.start(t, filepath.Join(dir, "run-pull"), "", "--bridge-ip", "10.201.0.1/24")
	if out, err := d.cli("kernel", "pull", Kernel); err != nil {
		t.Fatalf("kernel pull %s: %v\n%s\ndaemon log:\n%s", Kernel, err, out, tail(d.Log(), 20))
	}
	pull.Process.Signal(syscall.SIGTERM)
	pull.Wait()
	d.startInNetns(t, dir)
	d.importBusybox(t, dir, "")
	return d
}

// StartBare starts a daemon in a fresh network namespace with a fake
// kernel (an ELF header and a version string: it cannot boot) and the
// busybox image, for tests that call the API without booting a VM
// (create with no_start, lists, events). It needs root and ip only.
func StartBare(t *testing.T) *Daemon {
	t.Helper()
	testenv.RequireRoot(t, "to run the daemon in a network namespace")
	testenv.RequireTool(t, "ip", "go")
	testenv.RequireFile(t, testfixture.BusyboxPath, "busybox-static")
	d, dir := prepare(t)
	d.startInNetns(t, dir)
	k := filepath.Join(dir, "vmlinux")
	body := append([]byte("\x7fELF\x02\x01\x01\x00"), make([]byte, 56)...)
	body = append(body, []byte("Linux version 6.1.0-fake (test@banger) #1 SMP\x00")...)
	if err := os.WriteFile(k, body, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := d.cli("kernel", "import", "--name", "fake", "--kernel", k); err != nil {
		t.Fatalf("kernel import: %v\n%s", err, out)
	}
	d.importBusybox(t, dir, "fake")
	return d
}

// prepare builds the binaries into a fresh dir.
func prepare(t *testing.T) (*Daemon, string) {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	build(t, filepath.Join(bin, "banger"), "banger/cmd/banger")
	build(t, filepath.Join(bin, "banger-init"), "banger/cmd/banger-init") // banger finds it beside itself
	return &Daemon{StateDir: filepath.Join(dir, "state"), Bin: filepath.Join(bin, "banger"), log: &logBuffer{}}, dir
}

// startInNetns makes a network namespace (removed, with what runs in it,
// when the test ends) and starts the daemon there.
func (d *Daemon) startInNetns(t *testing.T, dir string) {
	t.Helper()
	d.NS = fmt.Sprintf("bgs%d-%d", os.Getpid(), time.Now().UnixNano()%100000)
	if out, err := exec.Command("ip", "netns", "add", d.NS).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	exec.Command("ip", "netns", "exec", d.NS, "ip", "link", "set", "lo", "up").Run()
	t.Cleanup(func() {
		// Kill what runs in the namespace (VMMs) before deleting it.
		out, _ := exec.Command("ip", "netns", "pids", d.NS).Output()
		for _, p := range strings.Fields(string(out)) {
			exec.Command("kill", "-9", p).Run()
		}
		time.Sleep(200 * time.Millisecond)
		exec.Command("ip", "netns", "del", d.NS).Run()
	})
	d.start(t, filepath.Join(dir, "run"), d.NS)
}

// importBusybox imports the busybox fixture as "busybox" (with kernel, if
// given).
func (d *Daemon) importBusybox(t *testing.T, dir, kernel string) {
	t.Helper()
	layout := filepath.Join(dir, "busybox-layout")
	img, err := testfixture.BusyboxImage("vmhost")
	if err != nil {
		testenv.Skip(t, "busybox fixture image: %v", err)
	}
	if err := testfixture.WriteLayout(layout, img); err != nil {
		t.Fatal(err)
	}
	args := []string{"image", "import", layout, "--name", "busybox"}
	if kernel != "" {
		args = append(args, "--kernel", kernel)
	}
	if out, err := d.cli(args...); err != nil {
		t.Fatalf("image import: %v\n%s", err, out)
	}
}

// start runs `banger daemon` on d's state dir (in ns unless empty) and
// waits until it answers on its socket.
func (d *Daemon) start(t *testing.T, runDir, ns string, extra ...string) *exec.Cmd {
	t.Helper()
	d.Socket = filepath.Join(runDir, "banger.sock")
	args := append([]string{"daemon", "--state-dir", d.StateDir, "--runtime-dir", runDir,
		"--default-image", "busybox", "--ready-timeout", "90s"}, extra...)
	var cmd *exec.Cmd
	if ns != "" {
		cmd = exec.Command("ip", append([]string{"netns", "exec", ns, d.Bin}, args...)...)
	} else {
		cmd = exec.Command(d.Bin, args...)
	}
	cmd.Stderr = d.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if out, err := d.cli("version"); err == nil && strings.Contains(out, "daemon") {
			return cmd
		}
	}
	t.Fatalf("daemon did not start:\n%s", tail(d.Log(), 30))
	return nil
}

// cli runs the banger CLI against d's socket.
func (d *Daemon) cli(args ...string) (string, error) {
	out, err := exec.Command(d.Bin, append([]string{"--socket", d.Socket}, args...)...).CombinedOutput()
	return string(out), err
}

var buildMu sync.Mutex

// build compiles pkg to out, static (banger-init runs in the guest).
func build(t *testing.T, out, pkg string) {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// logBuffer is a bytes.Buffer safe for the daemon's writes and our reads.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }
