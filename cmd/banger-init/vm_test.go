package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"banger/internal/agent"
	"banger/internal/guestproto"
	"banger/internal/initramfs"
	"banger/internal/testenv"
)

// readyTimeout bounds boot-to-agent under TCG on a shared machine; a boot
// normally takes seconds, this only turns a hang into a failure.
const readyTimeout = 120 * time.Second

type guestDisks struct{ rootfs, cow, work string }

type vm struct {
	t       *testing.T
	cmd     *exec.Cmd
	sock    string
	console string
	done    chan struct{}
	exitErr error
	started time.Time
}

// bootVM starts QEMU microvm under TCG with the flags TESTING.md records,
// drives attached in contract order and the agent on a virtio-serial port
// behind a unix socket.
func bootVM(t *testing.T, k kernelFixture, initrd string, d guestDisks, extraCmdline []string, extraQemu ...string) *vm {
	t.Helper()
	dir := t.TempDir()
	v := &vm{t: t, sock: filepath.Join(dir, "agent.sock"), console: filepath.Join(dir, "console.log"), done: make(chan struct{})}
	cmdline := append([]string{"console=ttyS0", "reboot=t", "panic=-1", "tsc_early_khz=2000000", "quiet",
		guestproto.KeyAgent + "=" + guestproto.AgentSerial, guestproto.KeyHostname + "=testvm"}, extraCmdline...)
	args := []string{
		"-M", "microvm,accel=tcg,x-option-roms=off,isa-serial=on,rtc=off,pit=on,pic=on",
		"-cpu", "max", "-m", "256", "-smp", "1", "-nodefaults", "-no-user-config", "-nographic",
		"-serial", "file:" + v.console, "-no-reboot",
		"-kernel", k.vmlinuz, "-initrd", initrd,
		"-append", strings.Join(cmdline, " "),
		"-drive", "id=rootfs,file=" + d.rootfs + ",format=raw,if=none,readonly=on",
		"-device", "virtio-blk-device,drive=rootfs",
		"-drive", "id=cow,file=" + d.cow + ",format=raw,if=none",
		"-device", "virtio-blk-device,drive=cow",
		"-drive", "id=work,file=" + d.work + ",format=raw,if=none",
		"-device", "virtio-blk-device,drive=work",
		"-device", "virtio-serial-device",
		"-chardev", "socket,id=agent,path=" + v.sock + ",server=on,wait=off",
		"-device", "virtserialport,chardev=agent,name=" + guestproto.AgentSerialName,
	}
	args = append(args, extraQemu...)
	v.cmd = exec.Command("qemu-system-x86_64", args...)
	var stderr bytes.Buffer
	v.cmd.Stderr = &stderr
	v.started = time.Now()
	if err := v.cmd.Start(); err != nil {
		t.Fatalf("start qemu: %v", err)
	}
	go func() {
		v.exitErr = v.cmd.Wait()
		if stderr.Len() > 0 {
			v.exitErr = fmt.Errorf("%v: %s", v.exitErr, stderr.String())
		}
		close(v.done)
	}()
	t.Cleanup(func() {
		select {
		case <-v.done:
		default:
			v.cmd.Process.Kill()
			<-v.done
		}
	})
	return v
}

func (v *vm) consoleTail() string {
	b, _ := os.ReadFile(v.console)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return strings.Join(lines, "\n")
}

// dial connects to the agent socket and runs the SSH handshake, which
// completes only once banger-init serves the port: that is readiness.
func (v *vm) dial(signer ssh.Signer, knownHosts string) *agent.Client {
	t := v.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	type res struct {
		c   *agent.Client
		err error
	}
	r := make(chan res, 1)
	go func() {
		var conn net.Conn
		var err error
		for ctx.Err() == nil { // the socket appears once QEMU has parsed its flags
			if conn, err = net.Dial("unix", v.sock); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			r <- res{nil, err}
			return
		}
		c, err := agent.Dial(ctx, conn, signer, agent.TOFU(knownHosts, "testvm"))
		r <- res{c, err}
	}()
	select {
	case x := <-r:
		if x.err != nil {
			t.Fatalf("agent not ready: %v\nconsole:\n%s", x.err, v.consoleTail())
		}
		t.Logf("qemu start to agent ready: %s", time.Since(v.started).Round(time.Millisecond))
		t.Cleanup(func() { x.c.Close() })
		return x.c
	case <-v.done:
		cancel()
		t.Fatalf("qemu exited before the agent answered: %v\nconsole:\n%s", v.exitErr, v.consoleTail())
	}
	return nil
}

func (v *vm) waitExit() {
	v.t.Helper()
	select {
	case <-v.done:
		if v.exitErr != nil {
			v.t.Fatalf("qemu: %v\nconsole:\n%s", v.exitErr, v.consoleTail())
		}
	case <-time.After(readyTimeout):
		v.t.Fatalf("guest did not power off\nconsole:\n%s", v.consoleTail())
	}
}

func run(t *testing.T, c *agent.Client, cmd string, stdin string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	var in *strings.Reader
	if stdin != "" {
		in = strings.NewReader(stdin)
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	var code int
	var err error
	if in != nil {
		code, err = c.Exec(ctx, cmd, nil, in, &out, &errb)
	} else {
		code, err = c.Exec(ctx, cmd, nil, nil, &out, &errb)
	}
	if err != nil {
		t.Fatalf("exec %q: %v (stderr %q)", cmd, err, errb.String())
	}
	return out.String(), errb.String(), code
}

func mustRun(t *testing.T, c *agent.Client, cmd string) string {
	t.Helper()
	out, errOut, code := run(t, c, cmd, "")
	if code != 0 {
		t.Fatalf("%q exited %d: %s%s", cmd, code, out, errOut)
	}
	return out
}

func fsck(t *testing.T, img string) {
	t.Helper()
	out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput()
	if err != nil {
		t.Fatalf("e2fsck -fn %s: %v\n%s", filepath.Base(img), err, out)
	}
}

type guestFixture struct {
	k      kernelFixture
	initrd string
	disks  guestDisks
	signer ssh.Signer
}

func skipWithoutQEMU(t *testing.T) {
	t.Helper()
	testenv.RequireTool(t, "qemu-system-x86_64")
}

var initOnce struct {
	sync.Once
	path string
}

// newGuestFixture builds banger-init (once per test binary), an initramfs
// with the virtio, overlay and vsock modules in dependency order, and fresh
// disks: busybox rootfs, formatted system.cow, a work disk authorizing a
// new key.
func newGuestFixture(t *testing.T) guestFixture {
	t.Helper()
	k := debianKernel(t)
	initOnce.Do(func() {
		dir, err := os.MkdirTemp("", "banger-init-build-")
		if err != nil {
			t.Fatal(err)
		}
		initOnce.path = buildInitTo(t, filepath.Join(dir, "banger-init"))
	})
	if initOnce.path == "" {
		t.Fatal("banger-init build failed earlier")
	}
	mods := moduleOrder(t, k, "virtio_mmio", "virtio_blk", "virtio_console", "virtio_net", "overlay",
		"vmw_vsock_virtio_transport")
	dir := t.TempDir()
	f := guestFixture{k: k, initrd: filepath.Join(dir, "initramfs.img"), signer: testSigner(t)}
	if err := initramfs.Build(context.Background(), initOnce.path, k.dir, mods, f.initrd); err != nil {
		t.Fatal(err)
	}
	f.disks = guestDisks{filepath.Join(dir, "rootfs.ext4"), filepath.Join(dir, "system.cow"), filepath.Join(dir, "root.ext4")}
	busyboxRootfs(t, f.disks.rootfs)
	mkfs(t, f.disks.cow, "64M", "")
	workDisk(t, f.disks.work, f.signer.PublicKey())
	return f
}

// TestBootBusyboxGuest boots a busybox image twice with the same disks and
// drives banger-init through the agent: exec, exit codes, stdin, disk
// order, persistence of / and /root, clean poweroff.
func TestBootBusyboxGuest(t *testing.T) {
	skipWithoutQEMU(t)
	f := newGuestFixture(t)
	k, initrd, d, signer := f.k, f.initrd, f.disks, f.signer
	knownHosts := filepath.Join(t.TempDir(), "known_hosts")

	// First boot.
	v := bootVM(t, k, initrd, d, nil)
	c := v.dial(signer, knownHosts)
	if err := c.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(mustRun(t, c, "uname -r")); got != k.release {
		t.Errorf("uname -r = %q, want %q", got, k.release)
	}
	if _, _, code := run(t, c, "sh -c 'exit 7'", ""); code != 7 {
		t.Errorf("exit 7 gave %d", code)
	}
	if out, errOut, code := run(t, c, "echo out; echo err >&2; exit 3", ""); out != "out\n" || errOut != "err\n" || code != 3 {
		t.Errorf("stdout %q stderr %q code %d", out, errOut, code)
	}
	if out, _, _ := run(t, c, "cat", "hello\nworld\n"); out != "hello\nworld\n" {
		t.Errorf("cat echoed %q", out)
	}
	// Drives arrive in command line order: sizes tell them apart
	// (48M rootfs, 64M cow, 80M work, in 512-byte sectors).
	if got := strings.Fields(mustRun(t, c, "cat /sys/block/vda/size /sys/block/vdb/size /sys/block/vdc/size")); strings.Join(got, " ") != "98304 131072 163840" {
		t.Errorf("vda/vdb/vdc sizes = %v, want rootfs, cow, work order", got)
	}
	mounts := mustRun(t, c, "cat /proc/mounts")
	for _, want := range []string{"overlay / overlay", "/dev/vdc /root ext4 rw", "devpts /dev/pts"} {
		if !strings.Contains(mounts, want) {
			t.Errorf("/proc/mounts lacks %q:\n%s", want, mounts)
		}
	}
	if got := mustRun(t, c, "pwd; echo $HOME; hostname; echo $PATH"); got != "/root\n/root\ntestvm\n"+defaultPath+"\n" {
		t.Errorf("environment:\n%s", got)
	}
	mustRun(t, c, "echo work > /root/f && echo sys > /etc/x")
	// busybox poweroff signals PID 1 (SIGUSR2); the exec may or may not see
	// its exit status before the connection drops, either is fine.
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	c.Exec(ctx, "poweroff", nil, nil, nil, nil)
	cancel()
	v.waitExit()
	fsck(t, d.work)
	fsck(t, d.cow)

	// Second boot, same disks: both writes survived, the host key is the
	// one recorded (TOFU accepts it), and shutdown by agent request.
	v = bootVM(t, k, initrd, d, nil)
	c = v.dial(signer, knownHosts)
	if got := mustRun(t, c, "cat /root/f /etc/x"); got != "work\nsys\n" {
		t.Errorf("after reboot: %q", got)
	}
	// The host side goes away (daemon restart) and comes back at once: the
	// serial port serves a new connection.
	for i := range 3 {
		c.Close()
		c = v.dial(signer, knownHosts)
		if got := mustRun(t, c, "echo again"); got != "again\n" {
			t.Fatalf("reconnect %d: %q", i, got)
		}
	}
	// A pty, for interactive sessions.
	var ttyOut bytes.Buffer
	code, err := c.ExecPTY(context.Background(), "tty; stty size", "xterm", agent.TermSize{Cols: 100, Rows: 30}, nil, nil, nil, &ttyOut)
	if err != nil || code != 0 || !strings.Contains(ttyOut.String(), "/dev/pts/") || !strings.Contains(ttyOut.String(), "30 100") {
		t.Errorf("pty exec: code %d err %v out %q", code, err, ttyOut.String())
	}
	// sftp subsystem.
	sc, err := sftp.NewClient(c.SSH())
	if err != nil {
		t.Fatalf("sftp: %v", err)
	}
	sf, err := sc.Create("/root/via-sftp")
	if err == nil {
		_, err = sf.Write([]byte("sftp ok"))
		sf.Close()
	}
	sc.Close()
	if err != nil {
		t.Fatalf("sftp write: %v", err)
	}
	if got := mustRun(t, c, "cat /root/via-sftp"); got != "sftp ok" {
		t.Errorf("sftp file = %q", got)
	}
	// A process holding a file open on /root must not leave the work disk
	// dirty: shutdown kills it before unmounting.
	mustRun(t, c, "cd /root && setsid sh -c 'exec 3>>/root/held; while :; do echo x >&3; sleep 1; done' </dev/null >/dev/null 2>&1 &")
	mustRun(t, c, "i=0; while [ ! -s /root/held ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; [ -s /root/held ]")
	if err := c.Poweroff(context.Background()); err != nil {
		t.Fatal(err)
	}
	v.waitExit()
	fsck(t, d.work)
	fsck(t, d.cow)
	if testing.Verbose() {
		t.Logf("console of the second boot:\n%s", v.consoleTail())
	}
	if !strings.Contains(v.consoleTail(), "banger-init: ready") {
		t.Errorf("console lacks the ready line:\n%s", v.consoleTail())
	}
}

// TestGuestNetwork boots with banger.ip/gw/dns on a QEMU user-mode NIC in
// restrict mode (no host interface is created and the guest cannot reach
// anything) and checks what banger-init configured.
func TestGuestNetwork(t *testing.T) {
	skipWithoutQEMU(t)
	f := newGuestFixture(t)
	v := bootVM(t, f.k, f.initrd, f.disks,
		[]string{"banger.ip=10.0.2.15/24", "banger.gw=10.0.2.2", "banger.dns=10.0.2.3,10.0.2.4", "banger.hostname=netvm"},
		"-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-device,netdev=n0,mac=02:00:0a:00:02:0f")
	c := v.dial(f.signer, filepath.Join(t.TempDir(), "known_hosts"))
	checks := map[string]string{
		"ip -4 addr show eth0": "inet 10.0.2.15/24",
		"ip route":             "default via 10.0.2.2 dev eth0",
		"cat /etc/resolv.conf": "nameserver 10.0.2.3\nnameserver 10.0.2.4\n",
		"cat /etc/hosts":       "10.0.2.15\tnetvm # banger",
		"hostname":             "netvm",
		"cat /etc/hostname":    "netvm",
		"ip link show lo":      "UP",
		"netstat -ltn":         ":22 ",
	}
	for cmd, want := range checks {
		if out := mustRun(t, c, cmd); !strings.Contains(out, want) {
			t.Errorf("%s: want %q in\n%s", cmd, want, out)
		}
	}
	if err := c.Poweroff(context.Background()); err != nil {
		t.Fatal(err)
	}
	v.waitExit()
}

// TestUnformattedCowFailsLoudly: system.cow must arrive formatted (the host
// runs mkfs.ext4). A blank one stops the boot with a message naming it, and
// the VM powers off instead of hanging.
func TestUnformattedCowFailsLoudly(t *testing.T) {
	skipWithoutQEMU(t)
	f := newGuestFixture(t)
	if err := os.Truncate(f.disks.cow, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(f.disks.cow, 64<<20); err != nil {
		t.Fatal(err)
	}
	v := bootVM(t, f.k, f.initrd, f.disks, nil)
	v.waitExit()
	console := v.consoleTail()
	for _, want := range []string{"banger-init: boot failed:", "/dev/vdb (system.cow) has no ext4 filesystem", "banger-init: powering off"} {
		if !strings.Contains(console, want) {
			t.Errorf("console lacks %q:\n%s", want, console)
		}
	}
}
