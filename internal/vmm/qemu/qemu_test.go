package qemu

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"banger/internal/hostnet"
	"banger/internal/testenv"
	"banger/internal/vmm"

	"github.com/vishvananda/netns"
)

// These tests boot real microVMs with QEMU (TCG here: no usable KVM) and
// skip (fail under CI) only when qemu-system-x86_64 is not installed.

func needQEMU(t *testing.T) *Driver {
	t.Helper()
	return needQEMUWith(t, Options{StopTimeout: 3 * time.Second})
}

func needQEMUWith(t *testing.T, opt Options) *Driver {
	t.Helper()
	d := New(opt)
	p := d.Probe()
	if !p.Usable {
		testenv.RequireTool(t, DefaultBinary)
		t.Fatalf("qemu installed but not usable: %s", p.Reason)
	}
	t.Logf("probe: %+v", p)
	return d
}

// spec returns a Spec whose runtime dir is short (socket paths) and
// removed after the test.
func spec(t *testing.T, kf kernelFixture, initrd string) vmm.Spec {
	t.Helper()
	rt, err := os.MkdirTemp("/tmp", "bgr-rt-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(rt) })
	return vmm.Spec{
		ID: "t1", Name: "test", Dir: t.TempDir(), RuntimeDir: rt,
		VCPU: 1, MemoryMiB: 256, Kernel: kf.vmlinuz, Initrd: initrd, CID: 3,
	}
}

// waitConsole polls the console log until it contains want, the VMM exits
// or ctx ends.
func waitConsole(ctx context.Context, t *testing.T, h vmm.Handle, s vmm.Spec, want string) {
	t.Helper()
	for {
		b, _ := os.ReadFile(s.Console())
		if strings.Contains(string(b), want) {
			return
		}
		wctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		err := h.Wait(wctx)
		cancel()
		if ctx.Err() != nil {
			t.Fatalf("no %q on the console: %v\n%s", want, ctx.Err(), vmm.Tail(s.Console(), 30))
		}
		if err == nil || !errors.Is(err, context.DeadlineExceeded) {
			b, _ = os.ReadFile(s.Console())
			if strings.Contains(string(b), want) {
				return
			}
			t.Fatalf("VMM exited (%v) before %q on the console:\n%s", err, want, vmm.Tail(s.Console(), 30))
		}
	}
}

func TestBootToMarkerAndPoweroff(t *testing.T) {
	d := needQEMU(t)
	kf := cloudKernel(t)
	s := spec(t, kf, initramfs(t, nil, "$B echo BANGER-MARKER-OK"))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	t0 := time.Now()
	h, err := d.Start(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Kill()
	waitConsole(ctx, t, h, s, "BANGER-MARKER-OK")
	t.Logf("start to marker: %s", time.Since(t0).Round(time.Millisecond))
	// poweroff -f with -no-reboot makes QEMU exit 0.
	if err := h.Wait(ctx); err != nil {
		t.Fatalf("Wait after poweroff: %v\n%s", err, vmm.Tail(s.Console(), 20))
	}
	t.Logf("start to exit: %s", time.Since(t0).Round(time.Millisecond))
	if _, err := os.Stat(filepath.Join(s.Dir, LogFile)); err != nil {
		t.Errorf("no VMM log: %v", err)
	}
}

// A guest that floods its console cannot fill the host's disk: the log
// keeps two capped generations, and the newest lines are kept.
func TestConsoleFloodCapped(t *testing.T) {
	needQEMU(t)
	d := New(Options{StopTimeout: 3 * time.Second, ConsoleMaxBytes: 64 << 10})
	kf := cloudKernel(t)
	s := spec(t, kf, initramfs(t, nil, "$B dd if=/dev/zero bs=1024 count=1024 2>/dev/null | $B tr '\\000' x >/dev/console; $B echo BANGER-MARKER-OK"))
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	h, err := d.Start(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Kill()
	if err := h.Wait(ctx); err != nil {
		t.Fatalf("Wait: %v\n%s", err, vmm.Tail(s.Console(), 5))
	}
	var total int64
	for _, p := range []string{s.Console(), s.Console() + ".1"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > 64<<10 {
			t.Errorf("%s: %d bytes, over the 64 KiB cap", p, fi.Size())
		}
		total += fi.Size()
	}
	b, off, err := vmm.ReadConsole(s.Console(), 0, 1<<20)
	if err != nil || !strings.Contains(string(b), "BANGER-MARKER-OK") {
		t.Fatalf("the last line is not kept (%v): %q", err, vmm.Tail(s.Console(), 2))
	}
	if off < 1<<20 {
		t.Errorf("logical end offset %d: the guest wrote over 1 MiB", off)
	}
	t.Logf("guest wrote %d bytes, %d kept on disk", off, total)
}

// QEMU runs under seccomp and, given RunAs, drops to that user once its
// devices are open; the guest still boots and powers off.
func TestSandboxedRunAs(t *testing.T) {
	needQEMU(t)
	u, err := user.Lookup(DefaultRunAs)
	if err != nil {
		testenv.Skip(t, "no %s user (%v): scripts/install-deps.sh creates it", DefaultRunAs, err)
	}
	d := New(Options{StopTimeout: 3 * time.Second, RunAs: DefaultRunAs})
	kf := cloudKernel(t)
	s := spec(t, kf, initramfs(t, nil, "$B sleep 2; $B echo BANGER-MARKER-OK"))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	h, err := d.Start(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Kill()
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", h.PID()))
	if err != nil {
		t.Fatal(err)
	}
	var uid, seccomp string
	for _, l := range strings.Split(string(st), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "Uid:" {
			uid = f[1]
		} else if len(f) >= 2 && f[0] == "Seccomp:" {
			seccomp = f[1]
		}
	}
	if uid != u.Uid {
		t.Errorf("QEMU runs as uid %s, want %s (%s)", uid, u.Uid, DefaultRunAs)
	}
	if seccomp != "2" {
		t.Errorf("QEMU seccomp mode %q, want 2 (filter)", seccomp)
	}
	waitConsole(ctx, t, h, s, "BANGER-MARKER-OK")
	if err := h.Wait(ctx); err != nil {
		t.Fatalf("Wait after poweroff: %v\n%s", err, vmm.Tail(s.Console(), 20))
	}
}

func TestStateAdoptStop(t *testing.T) {
	d := needQEMU(t)
	kf := cloudKernel(t)
	s := spec(t, kf, initramfs(t, nil, "$B echo SLEEPING\n$B sleep 100000"))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	h, err := d.Start(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Kill()
	waitConsole(ctx, t, h, s, "SLEEPING")

	st, err := h.State()
	if err != nil {
		t.Fatal(err)
	}
	if st.PID != h.PID() || st.Driver != Name || st.AgentMode != vmm.AgentSerial {
		t.Fatalf("state %+v, handle pid %d", st, h.PID())
	}
	pidfile, err := os.ReadFile(filepath.Join(s.RuntimeDir, PIDFile))
	if err != nil || strings.TrimSpace(string(pidfile)) != strconv.Itoa(h.PID()) {
		t.Fatalf("pidfile %q (%v), want %d", pidfile, err, h.PID())
	}
	if start, err := vmm.StartTime(h.PID()); err != nil || start != st.StartTime {
		t.Fatalf("start time %d (%v), state says %d", start, err, st.StartTime)
	}
	t.Logf("idle VM (256 MiB, TCG) VMM RSS: %s", rss(t, h.PID()))

	// A daemon restarted: a fresh driver adopts from the persisted state.
	h2, err := New(Options{StopTimeout: 2 * time.Second}).Adopt(st)
	if err != nil {
		t.Fatalf("adopt: %v", err)
	}
	if h2.PID() != h.PID() {
		t.Fatalf("adopted pid %d, want %d", h2.PID(), h.PID())
	}
	// A recycled pid (same pid, other start time) is refused.
	bad := st
	bad.StartTime++
	if _, err := d.Adopt(bad); !errors.Is(err, vmm.ErrNotRunning) {
		t.Fatalf("adopt with wrong start time: %v, want ErrNotRunning", err)
	}
	// A live process that is not this VM's QEMU is refused.
	bad = st
	bad.ControlSocket = "/nonexistent/qmp.sock"
	if _, err := d.Adopt(bad); !errors.Is(err, vmm.ErrNotRunning) {
		t.Fatalf("adopt with another socket: %v, want ErrNotRunning", err)
	}

	// The init ignores the power button, so Stop falls through to QMP quit.
	if err := h2.Stop(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if err := h.Wait(ctx); err != nil {
		// quit makes QEMU exit 0; a non-nil error means SIGKILL was needed.
		t.Fatalf("original handle Wait after stop: %v", err)
	}
	if err := h2.Wait(ctx); err != nil {
		t.Fatalf("adopted handle Wait after stop: %v", err)
	}
	if _, err := d.Adopt(st); !errors.Is(err, vmm.ErrNotRunning) {
		t.Fatalf("adopt of a stopped VM: %v, want ErrNotRunning", err)
	}
	if _, err := h.AgentConn(ctx); !errors.Is(err, vmm.ErrNotRunning) {
		t.Fatalf("AgentConn after stop: %v", err)
	}
}

func TestKill(t *testing.T) {
	d := needQEMU(t)
	kf := cloudKernel(t)
	s := spec(t, kf, initramfs(t, nil, "$B sleep 100000"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h, err := d.Start(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := h.State()
	if err := h.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := h.Wait(ctx); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("Wait after Kill: %v, want signal: killed", err)
	}
	if _, err := d.Adopt(st); !errors.Is(err, vmm.ErrNotRunning) {
		t.Fatalf("adopt of a killed VM: %v", err)
	}
	// Kill and Stop of a gone VM are no-ops.
	if err := h.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := h.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestPowerButton: system_powerdown reaches a guest that watches KEY_POWER
// (button + evdev loaded), so an init that acts on it stops gracefully.
func TestPowerButton(t *testing.T) {
	d := needQEMU(t)
	kf := cloudKernel(t)
	mods := kf.modules(t, "evdev", "button")
	// dd returns after the first input event (24 bytes) on the power button.
	// It must have the device open before the host presses the button
	// (events before open are not delivered), so the marker comes after it
	// started, with a margin for a loaded TCG guest.
	script := `$B dd if=/dev/input/event0 of=/dev/null bs=24 count=1 2>/dev/null &
$B sleep 3
$B echo WAITING-FOR-POWER
wait
$B echo POWER-BUTTON-PRESSED`
	s := spec(t, kf, initramfs(t, mods, script))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	h, err := d.Start(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Kill()
	waitConsole(ctx, t, h, s, "WAITING-FOR-POWER")
	// A long StopTimeout: the guest must power off by itself.
	d.opt.StopTimeout = 2 * time.Minute
	if err := h.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.Wait(ctx); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	b, _ := os.ReadFile(s.Console())
	if !strings.Contains(string(b), "POWER-BUTTON-PRESSED") {
		t.Fatalf("guest did not see the power button:\n%s", vmm.Tail(s.Console(), 20))
	}
}

func TestAgentSerial(t *testing.T) {
	// Forced: on a host with vhost-vsock the driver would pick vsock, and
	// this test covers the virtio-serial channel.
	d := needQEMUWith(t, Options{StopTimeout: 3 * time.Second, Agent: vmm.AgentSerial})
	if d.AgentMode() != vmm.AgentSerial {
		t.Fatalf("agent mode %s, want %s (forced)", d.AgentMode(), vmm.AgentSerial)
	}
	kf := cloudKernel(t)
	mods := kf.modules(t, "virtio_mmio", "virtio_console")
	// The port shows up asynchronously after insmod, and virtio_console
	// allows one open at a time: one fd serves both directions. A read
	// returns EOF whenever no host client is connected.
	script := `N=/sys/class/virtio-ports/vport0p1/name
i=0; while [ ! -e $N ] && [ $i -lt 100 ]; do $B sleep 0.1; i=$((i+1)); done
$B echo "PORT $($B cat $N)"
exec 3<>/dev/vport0p1
( while :; do $B echo hello; $B sleep 1; done ) >&3 &
while :; do
  while read l <&3; do $B echo "GOT $l"; done
  $B sleep 0.2 # EOF: the host closed its end; wait for the next client
done`
	s := spec(t, kf, initramfs(t, mods, script))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	h, err := d.Start(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Kill()
	waitConsole(ctx, t, h, s, "PORT banger.agent")

	for round := 0; round < 2; round++ { // the second dial is a restarted daemon
		c, err := h.AgentConn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(time.Minute))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || line != "hello\n" {
			t.Fatalf("round %d: read %q, %v", round, line, err)
		}
		msg := fmt.Sprintf("from-host-%d", round)
		if _, err := fmt.Fprintf(c, "%s\n", msg); err != nil {
			t.Fatal(err)
		}
		waitConsole(ctx, t, h, s, "GOT "+msg)
		c.Close()
	}
}

func rss(t *testing.T, pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return err.Error()
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			return strings.TrimSpace(strings.TrimPrefix(l, "VmRSS:"))
		}
	}
	return "?"
}

func TestArgs(t *testing.T) {
	d := New(Options{TSCKHz: 1234})
	s := vmm.Spec{
		Name: "a,b", Dir: "/v", RuntimeDir: "/r", VCPU: 2, MemoryMiB: 512,
		Kernel: "/k", Initrd: "/i", Cmdline: "banger.ip=172.30.0.2/24",
		Disks: []vmm.Disk{{Path: "/d/root", ReadOnly: true}, {Path: "/d/cow"}, {Path: "/d/work"}, {Path: "/d/mods", ReadOnly: true, Serial: "banger-modules"}},
		Net:   &vmm.NetConfig{Tap: "bgrabc", MAC: "02:42:ac:1e:00:02"}, CID: 7,
	}
	got := strings.Join(d.Args(s, "tcg", vmm.AgentSerial), " ")
	for _, want := range []string{
		"-name guest=a,,b",
		"-M microvm,accel=tcg,",
		"-cpu max -smp 2 -m 512",
		"-chardev socket,id=console,path=/r/console.sock,server=on,wait=on -serial chardev:console",
		`-append console=ttyS0 reboot=t panic=-1 quiet tsc=reliable tsc_early_khz=1234 banger.ip=172.30.0.2/24`,
		"rtc=on,pit=on,pic=on -rtc base=utc",
		// Disks as fds (fdsets): read-only, plus read-write when writable.
		"-add-fd fd=3,set=1 -drive id=vda,file=/dev/fdset/1,format=raw,if=none,discard=unmap,file.locking=off,file.drop-cache=off,readonly=on -device virtio-blk-device,drive=vda " +
			"-add-fd fd=4,set=2 -add-fd fd=5,set=2 -drive id=vdb,file=/dev/fdset/2,format=raw,if=none,discard=unmap,file.locking=off,file.drop-cache=off -device virtio-blk-device,drive=vdb " +
			"-add-fd fd=6,set=3 -add-fd fd=7,set=3 -drive id=vdc,file=/dev/fdset/3,format=raw,if=none,discard=unmap,file.locking=off,file.drop-cache=off -device virtio-blk-device,drive=vdc " +
			"-add-fd fd=8,set=4 -drive id=vdd,file=/dev/fdset/4,format=raw,if=none,discard=unmap,file.locking=off,file.drop-cache=off,readonly=on -device virtio-blk-device,drive=vdd,serial=banger-modules",
		"-netdev tap,id=net0,ifname=bgrabc,script=no,downscript=no -device virtio-net-device,netdev=net0,mac=02:42:ac:1e:00:02",
		"-chardev socket,id=agent,path=/r/agent.sock,server=on,wait=off -device virtserialport,chardev=agent,name=banger.agent",
		"-qmp unix:/r/qmp.sock,server=on,wait=off -pidfile /r/qemu.pid",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("args lack %q:\n%s", want, got)
		}
	}
	// A translation cache cap moves the accelerator to -accel (QEMU
	// refuses both forms at once); KVM has no translation cache.
	capped := New(Options{TSCKHz: 1234, TBSizeMiB: 48})
	tb := strings.Join(capped.Args(s, "tcg", vmm.AgentSerial), " ")
	if !strings.Contains(tb, "-M microvm,acpi=on,") || !strings.Contains(tb, "-accel tcg,tb-size=48") || strings.Contains(tb, "accel=tcg") {
		t.Errorf("tb-size args:\n%s", tb)
	}
	if k := strings.Join(capped.Args(s, "kvm", vmm.AgentVsock), " "); strings.Contains(k, "tb-size") || !strings.Contains(k, "accel=kvm") {
		t.Errorf("tb-size on kvm:\n%s", k)
	}
	kvm := strings.Join(d.Args(s, "kvm", vmm.AgentVsock), " ")
	for _, want := range []string{"accel=kvm", "-cpu host", "-device vhost-vsock-device,guest-cid=7"} {
		if !strings.Contains(kvm, want) {
			t.Errorf("kvm args lack %q:\n%s", want, kvm)
		}
	}
	if strings.Contains(kvm, "tsc") || strings.Contains(kvm, "virtio-serial") {
		t.Errorf("kvm/vsock args carry TCG or serial bits:\n%s", kvm)
	}
	// ACPI by default; off for a kernel booting Firecracker-style, whose
	// virtio-mmio devices QEMU then appends to the command line itself.
	if !strings.Contains(got, ",acpi=on,") {
		t.Errorf("default boot without acpi=on:\n%s", got)
	}
	// A balloon only when asked (it is part of the saved device layout),
	// before the agent's devices.
	if strings.Contains(got, "balloon") {
		t.Errorf("balloon without Spec.Balloon:\n%s", got)
	}
	s.Balloon = true
	if b := strings.Join(d.Args(s, "tcg", vmm.AgentSerial), " "); !strings.Contains(b, "-device virtio-balloon-device,free-page-reporting=on -device virtio-serial-device") {
		t.Errorf("balloon args:\n%s", b)
	}
	s.Balloon = false
	s.MMIOCmdline = true
	mmio := strings.Join(d.Args(s, "tcg", vmm.AgentSerial), " ")
	if !strings.Contains(mmio, "-M microvm,accel=tcg,acpi=off,") || strings.Contains(mmio, "acpi=on") {
		t.Errorf("mmio boot args:\n%s", mmio)
	}
	// A Firecracker-style kernel boots from its ELF vmlinux when it has
	// one (PVH: no decompression); an ACPI kernel from its bzImage.
	s.Vmlinux = "/vmlinux"
	if a := strings.Join(d.Args(s, "tcg", vmm.AgentSerial), " "); !strings.Contains(a, "-kernel /vmlinux ") {
		t.Errorf("mmio kernel with a vmlinux:\n%s", a)
	}
	s.MMIOCmdline = false
	if a := strings.Join(d.Args(s, "tcg", vmm.AgentSerial), " "); !strings.Contains(a, "-kernel /k ") {
		t.Errorf("acpi kernel:\n%s", a)
	}
}

func TestArgsShares(t *testing.T) {
	s := vmm.Spec{Name: "a", Dir: "/v", RuntimeDir: "/r", VCPU: 1, MemoryMiB: 256, Kernel: "/k",
		Shares: []vmm.Share{{Tag: "banger0", HostPath: "/srv/a,b"}, {Tag: "banger1", HostPath: "/srv/ro", ReadOnly: true}}}
	vfs := strings.Join(New(Options{ShareTransport: vmm.ShareVirtiofs}).Args(s, "tcg", vmm.AgentSerial), " ")
	for _, want := range []string{
		",memory-backend=mem ", "-object memory-backend-memfd,id=mem,size=256M,share=on -global virtio-mmio.force-legacy=false",
		"-chardev socket,id=fs0,path=/r/fs0.sock -device vhost-user-fs-device,chardev=fs0,tag=banger0",
		"-chardev socket,id=fs1,path=/r/fs1.sock -device vhost-user-fs-device,chardev=fs1,tag=banger1",
	} {
		if !strings.Contains(vfs, want) {
			t.Errorf("virtio-fs args lack %q:\n%s", want, vfs)
		}
	}
	p9 := strings.Join(New(Options{ShareTransport: vmm.Share9p}).Args(s, "tcg", vmm.AgentSerial), " ")
	for _, want := range []string{
		"-fsdev local,id=fs0,path=/srv/a,,b,security_model=none -device virtio-9p-device,fsdev=fs0,mount_tag=banger0",
		"-fsdev local,id=fs1,path=/srv/ro,security_model=none,readonly=on -device virtio-9p-device,fsdev=fs1,mount_tag=banger1",
	} {
		if !strings.Contains(p9, want) {
			t.Errorf("9p args lack %q:\n%s", want, p9)
		}
	}
	// Shared memory only where virtiofsd needs it: it is what snapshots
	// of other VMs never see.
	for _, a := range []string{p9, strings.Join(New(Options{}).Args(vmm.Spec{Name: "a", Dir: "/v", RuntimeDir: "/r", VCPU: 1, MemoryMiB: 256}, "tcg", vmm.AgentSerial), " ")} {
		if strings.Contains(a, "memory-backend") || strings.Contains(a, "force-legacy") {
			t.Errorf("shared memory without virtio-fs:\n%s", a)
		}
	}
}

func TestStartRejectsBadSpec(t *testing.T) {
	d := New(Options{})
	dir := t.TempDir()
	kernel := filepath.Join(dir, "k")
	os.WriteFile(kernel, []byte("x"), 0o644)
	base := vmm.Spec{Dir: filepath.Join(dir, "vm"), RuntimeDir: filepath.Join(dir, "rt"), VCPU: 1, MemoryMiB: 128, Kernel: kernel}
	cases := map[string]func(*vmm.Spec){
		"vcpu":    func(s *vmm.Spec) { s.VCPU = 0 },
		"memory":  func(s *vmm.Spec) { s.MemoryMiB = 1 },
		"disk":    func(s *vmm.Spec) { s.Disks = []vmm.Disk{{Path: filepath.Join(dir, "missing.ext4")}} },
		"kernel":  func(s *vmm.Spec) { s.Kernel = filepath.Join(dir, "nokernel") },
		"runtime": func(s *vmm.Spec) { s.RuntimeDir = "/" + strings.Repeat("r", 100) },
		"mac":     func(s *vmm.Spec) { s.Net = &vmm.NetConfig{Tap: "bgr1", MAC: "zz"} },
		"comma":   func(s *vmm.Spec) { s.Dir = filepath.Join(dir, "a,b") },
	}
	for name, mut := range cases {
		s := base
		mut(&s)
		if _, err := d.Start(context.Background(), s); err == nil {
			t.Errorf("%s: Start accepted a bad spec", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
		if _, err := os.Stat(s.Dir); err == nil {
			t.Errorf("%s: Start left %s behind", name, s.Dir)
		}
	}
}

// TestNetworkInNetns boots a VM on a tap enslaved to a bridge, all inside a
// network namespace the test creates (the host's interfaces are never
// touched), and the guest pings the bridge address.
func TestNetworkInNetns(t *testing.T) {
	d := needQEMU(t)
	testenv.RequireRoot(t, "for a network namespace")
	kf := cloudKernel(t)
	mods := kf.modules(t, "virtio_mmio", "virtio_net")
	script := `$B ip link set lo up
$B ip addr add 172.30.0.2/24 dev eth0 && $B ip link set eth0 up
$B ping -c 3 -W 5 172.30.0.1 && $B echo PING-OK || $B echo PING-FAILED`
	s := spec(t, kf, initramfs(t, mods, script))
	ip := net.ParseIP("172.30.0.2")
	s.Net = &vmm.NetConfig{Tap: hostnet.TapName("net-test"), MAC: hostnet.MACFromIP(ip)}

	nsName := fmt.Sprintf("bgr-qemu-%d", os.Getpid())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	type result struct {
		h   vmm.Handle
		err error
	}
	res := make(chan result, 1)
	go func() {
		// This thread moves into the namespace and is never unlocked, so Go
		// discards it afterwards. QEMU, forked from it, inherits the netns.
		runtime.LockOSThread()
		ns, err := netns.NewNamed(nsName)
		if err != nil {
			res <- result{err: fmt.Errorf("skip: %v", err)}
			return
		}
		defer ns.Close()
		if err := hostnet.EnsureBridge(hostnet.DefaultBridgeName, hostnet.DefaultBridgeCIDR); err != nil {
			res <- result{err: err}
			return
		}
		if err := hostnet.CreateTap(s.Net.Tap, hostnet.DefaultBridgeName); err != nil {
			res <- result{err: err}
			return
		}
		h, err := d.Start(ctx, s)
		res <- result{h, err}
	}()
	r := <-res
	t.Cleanup(func() { netns.DeleteNamed(nsName) })
	if r.err != nil {
		if strings.HasPrefix(r.err.Error(), "skip: ") {
			testenv.Skip(t, "cannot create a network namespace: %v", strings.TrimPrefix(r.err.Error(), "skip: "))
		}
		t.Fatal(r.err)
	}
	defer r.h.Kill()
	waitConsole(ctx, t, r.h, s, "PING")
	if err := r.h.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(s.Console())
	if !strings.Contains(string(b), "PING-OK") {
		t.Fatalf("guest could not ping the bridge:\n%s", vmm.Tail(s.Console(), 30))
	}
}

func TestHostTSCKHz(t *testing.T) {
	k := HostTSCKHz()
	if !haveTSC {
		if k != 0 {
			t.Fatalf("no TSC on this arch, measured %d kHz", k)
		}
		return
	}
	if k == 0 {
		t.Fatal("could not measure the host TSC")
	}
	// Two measurements agree to 1%: the figure is the TSC's rate, not noise.
	k2 := measureTSCKHz(20 * time.Millisecond)
	if d := k - k2; d > k/100 || d < -k/100 {
		t.Errorf("measured %d kHz then %d kHz", k, k2)
	}
	t.Logf("host TSC: %d kHz", k)
}
