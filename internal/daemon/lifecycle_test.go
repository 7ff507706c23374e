package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"banger/api"
	"banger/internal/imagebuild"
	"banger/internal/model"
	"banger/internal/store"
	"banger/internal/testenv"
	"banger/internal/vmm"
	"banger/internal/vmm/vmmtest"
)

// lifecycle is a daemon whose hypervisor is the vmmtest double: the whole
// VM lifecycle (create, exec, stop, restart, adopt, monitor, rm) runs
// without root, KVM or QEMU. The VMMs are real processes that outlive the
// daemon, so a second daemon on the same state dir adopts them.
type lifecycle struct {
	t   *testing.T
	cfg Config
	drv vmm.Driver
	// pids lists every VMM the test driver started.
	pids func() []int
	// hook is the daemon's startHook (see failAt).
	mu     sync.Mutex
	failAt string
	seen   []string
	// onFail, when set, runs in the step that fails (before the start
	// unwinds).
	onFail func()
	// onStep, when set, runs after every step, outside mu (it may block).
	onStep func(step string)

	log  syncBuffer
	d    *Daemon
	c    *api.Client
	stop func()
}

// syncBuffer collects the daemons' logs, printed when a test fails.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

const (
	lcImage  = "img"
	lcKernel = "testk"
)

// newLifecycle starts a daemon on drv (a *vmmtest.Driver, or a wrapper
// around tdrv) with a local kernel and a real (tiny) image, so a create
// resolves, prepares real disks and boots the double.
func newLifecycle(t *testing.T, drv vmm.Driver, tdrv *vmmtest.Driver, mut func(*Config)) *lifecycle {
	t.Helper()
	// The disks are real ext4 files: the work disk is materialized from
	// the image's seed and gets the daemon's key with debugfs.
	testenv.RequireTool(t, "mkfs.ext4", "e2fsck", "debugfs", "resize2fs")
	// The initramfs is built (pure Go) around whatever banger-init is:
	// the double boots nothing, so any regular file will do.
	fakeInit := filepath.Join(t.TempDir(), "banger-init")
	if err := os.WriteFile(fakeInit, []byte("#!/bin/false\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("BANGER_INIT", fakeInit)

	dir := t.TempDir()
	// Socket paths must fit 107 bytes; t.TempDir carries the test name.
	run, err := os.MkdirTemp("", "bgr-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(run) })
	cfg := DefaultConfig()
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.RuntimeDir = run
	cfg.BridgeIP = "10.200.0.1/24"
	cfg.DefaultImage = lcImage
	cfg.VMM = vmmtest.Name
	cfg.ReadyTimeout = "20s"
	if mut != nil {
		mut(&cfg)
	}
	l := &lifecycle{t: t, cfg: cfg, drv: drv, pids: tdrv.Started}
	t.Cleanup(func() {
		if l.stop != nil {
			l.stop()
		}
		// Whatever a failed test left running.
		for _, pid := range l.pids() {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", l.log.String())
		}
	})
	l.start()
	l.seed()
	return l
}

// start runs a daemon on l's state dir (New, then Serve).
func (l *lifecycle) start() {
	l.t.Helper()
	hook := func(d *Daemon) { d.startHook = l.hook }
	d, err := New(context.Background(), l.cfg, &l.log, WithDrivers(l.drv), hook)
	if err != nil {
		l.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Serve(ctx); close(done) }()
	l.d, l.c = d, api.NewClient(d.cfg.Socket)
	l.stop = func() { cancel(); <-done; l.stop = nil }
	for i := 0; ; i++ {
		if err := l.c.Call(context.Background(), api.MethodPing, nil, nil); err == nil {
			return
		} else if i == 200 {
			l.t.Fatalf("daemon does not answer: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// restart closes the daemon (its VMMs keep running) and starts another on
// the same state dir, which reconciles: adopts live VMMs, marks dead ones
// stopped.
func (l *lifecycle) restart() {
	l.t.Helper()
	l.stop()
	l.start()
}

// hook fails the start step named by failAt; it records every step it saw.
func (l *lifecycle) hook(step string) error {
	l.mu.Lock()
	onStep := l.onStep
	l.mu.Unlock()
	if onStep != nil {
		onStep(step)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen = append(l.seen, step)
	if step == l.failAt {
		if l.onFail != nil {
			l.onFail()
		}
		return errInjected
	}
	return nil
}

var errInjected = errors.New("injected failure")

// failStartAt makes the next starts fail after step ("" for none) and
// forgets the steps seen so far.
func (l *lifecycle) failStartAt(step string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failAt, l.seen = step, nil
}

func (l *lifecycle) stepsSeen() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.seen...)
}

// seed imports a dummy kernel and builds a real image from a tiny tree
// with the daemon's key in its work seed.
func (l *lifecycle) seed() {
	t := l.t
	t.Helper()
	ctx := context.Background()
	k := filepath.Join(t.TempDir(), "vmlinux")
	body := append([]byte("\x7fELF\x02\x01\x01\x00"), make([]byte, 56)...)
	body = append(body, []byte("Linux version 6.1.0-test (test@banger) #1 SMP\x00")...)
	if err := os.WriteFile(k, body, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := l.d.kernels.Import(ctx, api.KernelImportParams{Name: lcKernel, Kernel: k}); err != nil {
		t.Fatal(err)
	}
	tree := t.TempDir()
	for _, d := range []string{"root", "etc", "bin"} {
		if err := os.MkdirAll(filepath.Join(tree, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(tree, "root", "hello"), []byte("from the seed\n"), 0o644)
	work, err := l.d.images.tempDir()
	if err != nil {
		t.Fatal(err)
	}
	res, err := imagebuild.BuildFromTree(ctx, tree, model.ImageConfig{}, l.d.images.buildOptions(ctx, work))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.d.images.publishImage(ctx, res, model.Image{Name: lcImage, Source: "test", Kernel: lcKernel}); err != nil {
		t.Fatal(err)
	}
}

// create makes a VM with small disks (mkfs and e2fsck stay fast).
func (l *lifecycle) create(name string, noStart bool) (api.VM, error) {
	var vm api.VM
	err := l.c.Call(context.Background(), api.MethodVMCreate, api.VMCreateParams{
		Name: name, SystemOverlaySize: "16M", WorkDiskSize: "128M", NoStart: noStart}, &vm)
	return vm, err
}

func (l *lifecycle) mustCreate(name string) api.VM {
	l.t.Helper()
	vm, err := l.create(name, false)
	if err != nil {
		l.t.Fatalf("create %s: %v", name, err)
	}
	if vm.State != model.StateRunning || vm.VMM != vmmtest.Name || vm.PID <= 0 {
		l.t.Fatalf("created %s: state %s vmm %q pid %d", name, vm.State, vm.VMM, vm.PID)
	}
	return vm
}

func (l *lifecycle) call(method string, params, out any) error {
	return l.c.Call(context.Background(), method, params, out)
}

// exec runs a command in the guest through the daemon's agent connection.
func (l *lifecycle) exec(name string, cmd ...string) (api.ExecResult, error) {
	var res api.ExecResult
	err := l.call(api.MethodVMExec, api.ExecParams{Name: name, Cmd: cmd}, &res)
	return res, err
}

func (l *lifecycle) mustExec(name string) {
	l.t.Helper()
	res, err := l.exec(name, "echo", "hello from", name)
	if err != nil {
		l.t.Fatalf("exec in %s: %v", name, err)
	}
	if res.ExitCode != 0 || res.Stdout != "hello from "+name+"\n" {
		l.t.Fatalf("exec in %s: exit %d stdout %q stderr %q", name, res.ExitCode, res.Stdout, res.Stderr)
	}
}

func (l *lifecycle) get(name string) (model.VMRecord, error) {
	return l.d.vms.find(context.Background(), name)
}

// alive reports whether pid is a vmmtest guest that has not exited (a
// zombie counts as gone).
func alive(pid int) bool {
	if _, err := vmm.StartTime(pid); err != nil {
		return false
	}
	cl, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && bytes.Contains(cl, []byte("vmmtest-guest"))
}

// waitGone waits (bounded) for pid to exit: a VMM that got SIGTERM or a
// poweroff takes a moment.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("VMM pid %d still running", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// noLeftovers checks that nothing of a VM's boot is left on the host: no
// VMM process of this driver for the VM, no runtime dir, no live entry, no port
// forward, and no network brought up for a VM that has none.
func (l *lifecycle) noLeftovers(id string) {
	l.t.Helper()
	rt := l.d.vms.vmRuntimeDir(id)
	for _, pid := range l.pids() {
		cl, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if alive(pid) && bytes.Contains(cl, []byte(rt+"/")) {
			l.t.Errorf("VMM pid %d of VM %s still running", pid, id)
		}
	}
	if _, err := os.Stat(l.d.vms.vmRuntimeDir(id)); !errors.Is(err, os.ErrNotExist) {
		l.t.Errorf("runtime dir %s left behind (%v)", l.d.vms.vmRuntimeDir(id), err)
	}
	if lv := l.d.vms.getLive(id); lv != nil {
		l.t.Errorf("VM %s still registered as live", id)
	}
	if fw := l.d.net.fwd.List(); len(fw) > 0 {
		l.t.Errorf("port forwards left: %v", fw)
	}
	l.d.net.mu.Lock()
	ready := l.d.net.ready
	l.d.net.mu.Unlock()
	if ready {
		l.t.Errorf("host network brought up for a driver without guest network")
	}
}

// TestVMLifecycleTestDriver: create → exec → stop → start → daemon restart
// with the VMM kept running → adopt (exec still works) → rm, plus a VM
// whose VMM died while no daemon ran, all without root.
func TestVMLifecycleTestDriver(t *testing.T) {
	tdrv := vmmtest.New()
	l := newLifecycle(t, tdrv, tdrv, nil)

	vm := l.mustCreate("life")
	l.mustExec("life")
	if res, err := l.exec("life", "exit 3"); err != nil || res.ExitCode != 3 {
		t.Fatalf("exit status through the agent: %+v %v", res, err)
	}
	if _, err := os.Stat(filepath.Join(vm.Dir, workDiskName)); err != nil {
		t.Fatalf("work disk: %v", err)
	}

	// Stop: graceful poweroff over the agent; the VMM is gone, the VM's
	// runtime dir too; the record keeps its disks.
	var stopped api.VM
	if err := l.call(api.MethodVMStop, api.VMStopParams{Name: "life"}, &stopped); err != nil {
		t.Fatal(err)
	}
	if stopped.State != model.StateStopped || stopped.PID != 0 {
		t.Fatalf("after stop: state %s pid %d", stopped.State, stopped.PID)
	}
	waitGone(t, vm.PID)
	l.noLeftovers(vm.ID)
	if _, err := l.exec("life", "true"); !api.IsKind(err, api.KindConflict) {
		t.Fatalf("exec in a stopped VM: %v", err)
	}

	// Start again: the existing work disk is reused (its key checked).
	var again api.VM
	if err := l.call(api.MethodVMStart, api.NameParams{Name: "life"}, &again); err != nil {
		t.Fatal(err)
	}
	if again.State != model.StateRunning || again.PID == vm.PID || !alive(again.PID) {
		t.Fatalf("after start: state %s pid %d (first boot %d)", again.State, again.PID, vm.PID)
	}
	l.mustExec("life")

	// A second VM whose VMM dies while no daemon runs.
	doomed := l.mustCreate("doomed")

	l.stop()
	if !alive(again.PID) {
		t.Fatal("closing the daemon ended its VMM")
	}
	syscall.Kill(doomed.PID, syscall.SIGKILL)
	waitGone(t, doomed.PID)
	l.start()

	// Adopted: same VMM, still running, reachable through a fresh agent
	// connection.
	rec, err := l.get("life")
	if err != nil {
		t.Fatal(err)
	}
	if rec.State != model.StateRunning || rec.Runtime.PID != again.PID || l.d.vms.getLive(rec.ID) == nil {
		t.Fatalf("after restart: state %s pid %d (want %d) live %v", rec.State, rec.Runtime.PID, again.PID, l.d.vms.getLive(rec.ID) != nil)
	}
	l.mustExec("life")
	// Dead while the daemon was away: stopped, its runtime dir removed.
	drec, err := l.get("doomed")
	if err != nil {
		t.Fatal(err)
	}
	if drec.State != model.StateStopped || drec.Runtime.PID != 0 {
		t.Fatalf("dead VM after restart: state %s pid %d", drec.State, drec.Runtime.PID)
	}
	if _, err := os.Stat(l.d.vms.vmRuntimeDir(drec.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("runtime dir of the dead VM: %v", err)
	}

	// rm of a running VM needs force; then nothing is left.
	if err := l.call(api.MethodVMDelete, api.VMDeleteParams{Name: "life"}, nil); !api.IsKind(err, api.KindConflict) {
		t.Fatalf("rm of a running VM without force: %v", err)
	}
	if err := l.call(api.MethodVMDelete, api.VMDeleteParams{Name: "life", Force: true}, nil); err != nil {
		t.Fatal(err)
	}
	if err := l.call(api.MethodVMDelete, api.VMDeleteParams{Name: "doomed"}, nil); err != nil {
		t.Fatal(err)
	}
	for _, v := range []api.VM{vm, doomed} {
		if _, err := l.get(v.Name); !api.IsKind(err, api.KindNotFound) {
			t.Fatalf("%s after rm: %v", v.Name, err)
		}
		if _, err := os.Stat(v.Dir); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("dir of %s after rm: %v", v.Name, err)
		}
		l.noLeftovers(v.ID)
	}
}

// TestVMMDeathNoticed: a VMM killed behind the daemon's back is noticed by
// the monitor, for a VMM this daemon started (it waits for its child) and
// for one it adopted after a restart (it polls the pid).
func TestVMMDeathNoticed(t *testing.T) {
	tdrv := vmmtest.New()
	l := newLifecycle(t, tdrv, tdrv, nil)
	started := l.mustCreate("started")
	adopted := l.mustCreate("adopted")
	l.restart()
	if l.d.vms.getLive(adopted.ID) == nil {
		t.Fatal("VM not adopted after restart")
	}
	for _, vm := range []api.VM{started, adopted} {
		syscall.Kill(vm.PID, syscall.SIGKILL)
		waitState(t, l, vm.Name, model.StateStopped)
		l.noLeftovers(vm.ID)
		rec, _ := l.get(vm.Name)
		if rec.Runtime.PID != 0 || len(rec.Runtime.VMMState) != 0 {
			t.Fatalf("%s after its VMM died: pid %d state %s", vm.Name, rec.Runtime.PID, rec.Runtime.VMMState)
		}
	}
	// And it starts again.
	if err := l.call(api.MethodVMStart, api.NameParams{Name: "started"}, nil); err != nil {
		t.Fatal(err)
	}
	l.mustExec("started")
}

// waitState polls the store (bounded) until the VM is in state want.
func waitState(t *testing.T, l *lifecycle, name string, want model.VMState) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		rec, err := l.get(name)
		if err == nil && rec.State == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: state %s (err %v), want %s", name, rec.State, err, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestStartFailureLeavesNothing fails a start after each step in turn and
// checks what is left. What a failure leaves (start.go, startRun.fail, and
// vms.go, CreateVM):
//   - before a VMM ran (resolve_kernel .. runtime_dir): a failed create
//     removes its reservation (no row, no VM dir); a failed start of an
//     existing VM leaves it in the state it had (stopped), disks kept;
//   - once a VMM ran (boot, wait_ready, publish): the VMM is killed and the
//     VM is in state error with last_error naming the step, its files
//     (console.log) kept for `vm logs`; a failed create keeps the row.
//
// Either way no VMM process, runtime dir, live entry or port forward is
// left. Steps the test driver skips (network, publish: it has no guest
// network; provision: these VMs have none, and the test driver's exec and
// sftp would run on the host) never reach the hook, which the test checks
// too. Provisioning failures are covered by the root end-to-end tests.
func TestStartFailureLeavesNothing(t *testing.T) {
	tdrv := vmmtest.New()
	l := newLifecycle(t, tdrv, tdrv, nil)
	// A stopped VM with prepared disks, for the start half.
	if _, err := l.create("existing", false); err != nil {
		t.Fatal(err)
	}
	if err := l.call(api.MethodVMStop, api.VMStopParams{Name: "existing"}, nil); err != nil {
		t.Fatal(err)
	}
	// The test driver has no guest network, the test kernel keeps no
	// module tree, nothing is provisioned and nothing shared: those steps
	// are skipped, never run.
	skipped := map[string]bool{"network": true, "publish": true, "prepare_modules": true, "provision": true, "shares": true}
	vmmRan := false
	for i, step := range StartSteps() {
		if step == "boot" {
			vmmRan = true
		}
		t.Run(step, func(t *testing.T) {
			l.t = t
			l.failStartAt(step)
			name := fmt.Sprintf("fail-%d", i)
			vm, err := l.create(name, false)
			if skipped[step] {
				if err != nil {
					t.Fatalf("create: %v", err)
				}
				if slices.Contains(l.stepsSeen(), step) {
					t.Fatalf("step %s ran though it does not apply", step)
				}
				if err := l.call(api.MethodVMDelete, api.VMDeleteParams{Name: name, Force: true}, nil); err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), errInjected.Error()) || !strings.Contains(err.Error(), step) {
				t.Fatalf("create failing at %s: %v", step, err)
			}
			if got := l.stepsSeen(); got[len(got)-1] != step {
				t.Fatalf("steps seen %v, want the last to be %s", got, step)
			}
			rec, gerr := l.get(name)
			if !vmmRan {
				if !api.IsKind(gerr, api.KindNotFound) {
					t.Errorf("failed create before boot: reservation kept (%s, %v)", rec.State, gerr)
				}
				if rec, err := l.d.store.GetVM(context.Background(), vm.ID); vm.ID != "" && !errors.Is(err, store.ErrNotFound) {
					t.Errorf("row of the failed create: %+v %v", rec, err)
				}
				entries, _ := os.ReadDir(filepath.Join(l.cfg.StateDir, "vms"))
				if len(entries) != 1 { // "existing"
					t.Errorf("VM dirs after a failed create: %d, want 1", len(entries))
				}
			} else {
				l.checkFailed(rec, gerr, step, step == "wait_ready")
			}
			if gerr == nil {
				l.noLeftovers(rec.ID)
				if err := l.call(api.MethodVMDelete, api.VMDeleteParams{Name: name}, nil); err != nil {
					t.Fatal(err)
				}
			}

			// The same step failing in a start of an existing VM.
			err = l.call(api.MethodVMStart, api.NameParams{Name: "existing"}, nil)
			if err == nil || !strings.Contains(err.Error(), errInjected.Error()) {
				t.Fatalf("start failing at %s: %v", step, err)
			}
			rec, gerr = l.get("existing")
			if !vmmRan {
				if gerr != nil || rec.State != model.StateStopped || !strings.Contains(rec.Runtime.LastError, step) {
					t.Errorf("failed start before boot: state %s last_error %q (%v), want stopped", rec.State, rec.Runtime.LastError, gerr)
				}
			} else {
				l.checkFailed(rec, gerr, step, step == "wait_ready")
			}
			if _, err := os.Stat(filepath.Join(rec.Runtime.Dir, workDiskName)); err != nil {
				t.Errorf("work disk of the existing VM: %v", err)
			}
			l.noLeftovers(rec.ID)
		})
	}
	l.t = t
	// After all that, a start succeeds.
	l.failStartAt("")
	if err := l.call(api.MethodVMStart, api.NameParams{Name: "existing"}, nil); err != nil {
		t.Fatal(err)
	}
	l.mustExec("existing")
}

// checkFailed: a VM whose VMM ran and then failed is in state error with
// the step in last_error, no pid, and its console kept.
func (l *lifecycle) checkFailed(rec model.VMRecord, err error, step string, console bool) {
	t := l.t
	t.Helper()
	if err != nil {
		t.Fatalf("VM after a failure at %s: %v", step, err)
	}
	if rec.State != model.StateError || rec.Runtime.PID != 0 || len(rec.Runtime.VMMState) != 0 || !strings.Contains(rec.Runtime.LastError, step) {
		t.Errorf("after a failure at %s: state %s pid %d last_error %q, want error", step, rec.State, rec.Runtime.PID, rec.Runtime.LastError)
	}
	if _, err := os.Stat(filepath.Join(rec.Runtime.Dir, "console.log")); console && err != nil {
		t.Errorf("console of the failed VM: %v", err)
	}
}

// faultyDriver is the test driver with one fault, for the failures a
// real hypervisor has rather than injected ones.
type faultyDriver struct {
	*vmmtest.Driver
	// fault: "start" (Start fails, nothing spawned), "exit" (the VMM dies
	// before the guest is ready), "hang" (the agent channel accepts but
	// the guest never answers: a boot stuck before banger-init).
	fault string
}

func (f *faultyDriver) Start(ctx context.Context, s vmm.Spec) (vmm.Handle, error) {
	if f.fault == "start" {
		return nil, errors.New("injected: the VMM would not start")
	}
	h, err := f.Driver.Start(ctx, s)
	if err != nil {
		return nil, err
	}
	switch f.fault {
	case "exit":
		syscall.Kill(h.PID(), syscall.SIGKILL)
	case "hang":
		return hungAgent{h}, nil
	}
	return h, nil
}

// hungAgent's agent channel swallows what the host writes and never
// answers.
type hungAgent struct{ vmm.Handle }

func (hungAgent) AgentConn(ctx context.Context) (net.Conn, error) {
	host, guest := net.Pipe()
	go io.Copy(io.Discard, guest)
	return host, nil
}

// TestStartDriverFailures: a VMM that does not start, dies during boot, or
// never answers leaves nothing running, and the VM in state error with the
// reason; the ready timeout bounds a guest that never answers.
func TestStartDriverFailures(t *testing.T) {
	for _, tc := range []struct{ fault, step, reason string }{
		{"start", "boot", "would not start"},
		{"exit", "wait_ready", "exited before the guest was ready"},
		{"hang", "wait_ready", "not ready after 1s"},
	} {
		t.Run(tc.fault, func(t *testing.T) {
			tdrv := vmmtest.New()
			l := newLifecycle(t, &faultyDriver{Driver: tdrv, fault: tc.fault}, tdrv, func(c *Config) { c.ReadyTimeout = "1s" })
			begin := time.Now()
			_, err := l.create("faulty", false)
			if err == nil || !strings.Contains(err.Error(), tc.reason) || !api.IsKind(err, api.KindUnavailable) {
				t.Fatalf("create: %v (kind %s), want %q", err, api.KindOf(err), tc.reason)
			}
			if took := time.Since(begin); took > 15*time.Second {
				t.Fatalf("a failed create took %s with ready_timeout 1s", took)
			}
			rec, gerr := l.get("faulty")
			l.checkFailed(rec, gerr, tc.step, tc.fault == "hang")
			if !strings.Contains(rec.Runtime.LastError, tc.reason) {
				t.Errorf("last_error %q, want %q", rec.Runtime.LastError, tc.reason)
			}
			if tc.fault != "start" && len(l.pids()) != 1 {
				t.Fatalf("VMMs started: %v, want one", l.pids())
			}
			l.noLeftovers(rec.ID)
			// A failed VM can be removed without force.
			if err := l.call(api.MethodVMDelete, api.VMDeleteParams{Name: "faulty"}, nil); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestFailedCreateReportsRollbackErrors: when undoing the reservation of a
// failed create fails too (here the store is gone), the caller hears of
// it, not only the log.
func TestFailedCreateReportsRollbackErrors(t *testing.T) {
	tdrv := vmmtest.New()
	l := newLifecycle(t, tdrv, tdrv, nil)
	l.failStartAt("prepare_disks")
	l.mu.Lock()
	l.onFail = func() { l.d.store.Close() }
	l.mu.Unlock()
	_, err := l.create("orphan", false)
	for _, want := range []string{errInjected.Error(), "record the failure", "roll back the reservation", `delete the row of VM "orphan"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("create: %v, want %q in it", err, want)
		}
	}
	// What could be undone was: the VM's directory is gone.
	if entries, _ := os.ReadDir(filepath.Join(l.cfg.StateDir, "vms")); len(entries) != 0 {
		t.Fatalf("VM dirs after the failed create: %d", len(entries))
	}
}

// TestKeyRotationWaitsOnlyForKeySteps: a start holds keyUseMu shared from
// prepare_disks to wait_ready, no longer: a rotation runs while a start is
// still resolving its kernel or initramfs, and waits while one is between
// its disks and its agent.
//
// No VM is live while the key rotates: rotation pushes the new key with a
// shell script over the agent, and the vmmtest guest runs exec on the
// host.
func TestKeyRotationWaitsOnlyForKeySteps(t *testing.T) {
	tdrv := vmmtest.New()
	l := newLifecycle(t, tdrv, tdrv, nil)
	ctx := context.Background()
	paused, resume := make(chan string), make(chan struct{})
	var pauseAt string
	l.mu.Lock()
	l.onStep = func(step string) {
		l.mu.Lock()
		at := pauseAt
		l.mu.Unlock()
		if step == at {
			paused <- step
			<-resume
		}
	}
	l.mu.Unlock()
	pause := func(step string) {
		l.mu.Lock()
		pauseAt = step
		l.mu.Unlock()
	}
	// A failing test must not leave a start paused (the daemon's shutdown
	// would wait for it).
	t.Cleanup(func() { pause(""); close(resume) })
	rotate := func() <-chan error {
		l.d.vms.liveMu.Lock()
		n := len(l.d.vms.live)
		l.d.vms.liveMu.Unlock()
		if n > 0 {
			t.Fatalf("%d VMs live: rotation would run its key script on the host", n)
		}
		done := make(chan error, 1)
		go func() { _, err := l.d.rotateKey(ctx); done <- err }()
		return done
	}
	created := func(name string) <-chan error {
		done := make(chan error, 1)
		go func() { _, err := l.create(name, false); done <- err }()
		return done
	}

	// Paused before its disks: the rotation goes ahead.
	pause("prepare_initramfs")
	first := created("early")
	<-paused
	fp := l.d.keys.fingerprint()
	select {
	case err := <-rotate():
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("rotation waited for a start that had not reached its disks")
	}
	if l.d.keys.fingerprint() == fp {
		t.Fatal("key not rotated")
	}
	pause("")
	resume <- struct{}{}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	l.mustExec("early")
	if err := l.call(api.MethodVMDelete, api.VMDeleteParams{Name: "early", Force: true}, nil); err != nil {
		t.Fatal(err)
	}

	// Paused between disks and agent (the start then fails, so no VM is
	// live when the rotation runs): the rotation waits for it.
	pause("boot")
	l.failStartAt("boot")
	second := created("late")
	<-paused
	fp = l.d.keys.fingerprint()
	rotated := rotate()
	select {
	case err := <-rotated:
		t.Fatalf("rotation ran while a start held the key between disks and agent (%v)", err)
	case <-time.After(300 * time.Millisecond):
	}
	resume <- struct{}{}
	if err := <-second; err == nil || !strings.Contains(err.Error(), errInjected.Error()) {
		t.Fatalf("create: %v", err)
	}
	select {
	case err := <-rotated:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("rotation still waiting after the start ended")
	}
	if l.d.keys.fingerprint() == fp {
		t.Fatal("key not rotated")
	}
}
