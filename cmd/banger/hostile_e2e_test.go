package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"banger/api"
	"banger/internal/imagebuild"
)

// vmHWM resets the daemon's peak RSS (clear_refs 5) when reset, and
// returns it (VmHWM, bytes).
func vmHWM(t *testing.T, pid int, reset bool) int64 {
	t.Helper()
	if reset {
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// TestHostileGuest: what a guest (root inside) can do to the daemon.
//   - 300 MiB printed to a `vm exec` streams through (every byte arrives)
//     and to a vm.exec RPC is cut at MaxExecOutput with a clear error;
//     the daemon's peak RSS grows by far less than either.
//   - A 15 TiB sparse /root/.ssh/authorized_keys (ext4's limit; 16T is
//     EFBIG) is set aside unread at the next start: the VM boots, the
//     daemon's RSS stays bounded, and vm exec works with the CLI's key.
//   - A guest that never answers (its VMM stopped with SIGSTOP, so the
//     agent channel accepts and stays silent; the agent is PID 1 in a
//     banger-init guest, which SIGSTOP from inside cannot stop) fails
//     its key push in `ssh-key rotate`, which still returns, and a create
//     running beside the rotation completes.
func TestHostileGuest(t *testing.T) {
	e := newVMEnv(t)
	pid := e.cmd.Process.Pid
	e.mustRun(t, "vm", "create", "--image", "busybox", "--name", "h1")
	const flood = 300 << 20
	const bound = 128 << 20 // the peak RSS growth allowed while 300 MiB flow
	floodCmd := fmt.Sprintf("yes | head -c %d", flood)

	base := vmHWM(t, pid, true)
	var got countWriter
	cmd := exec.Command(bangerBin, "--socket", e.socket, "vm", "exec", "h1", "--", "sh", "-c", floodCmd)
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &got, &stderr
	if err := cmd.Run(); err != nil || got.n != flood {
		t.Fatalf("vm exec flood: %v, %d bytes of %d: %s", err, got.n, flood, stderr.String())
	}
	if peak := vmHWM(t, pid, false); peak-base > bound {
		t.Fatalf("daemon peak RSS %d -> %d bytes while vm exec streamed %d bytes", base, peak, flood)
	} else {
		t.Logf("vm exec streamed %d MiB: daemon VmHWM %d -> %d MiB", flood>>20, base>>20, peak>>20)
	}

	base = vmHWM(t, pid, true)
	c := api.NewClient(e.socket)
	var res api.ExecResult
	err := c.Call(context.Background(), api.MethodVMExec, api.ExecParams{Name: "h1", Cmd: []string{"sh", "-c", floodCmd}}, &res)
	if !api.IsKind(err, api.KindInvalidArgument) || !strings.Contains(err.Error(), "more than 4 MiB") {
		t.Fatalf("vm.exec of %d bytes: %v (stdout %d bytes)", flood, err, len(res.Stdout))
	}
	if peak := vmHWM(t, pid, false); peak-base > bound {
		t.Fatalf("daemon peak RSS %d -> %d bytes while vm.exec collected output", base, peak)
	} else {
		t.Logf("vm.exec flood cut: daemon VmHWM %d -> %d MiB", base>>20, peak>>20)
	}
	if out := e.mustRun(t, "vm", "exec", "h1", "--", "echo", "ok"); out != "ok\n" {
		t.Fatalf("after the floods: %q", out)
	}

	// The sparse authorized_keys. No new SSH connection to the guest
	// after it: the guest's own sshd would read it whole (the guest's
	// problem); stop goes over the agent connection the daemon holds.
	// Sizes in bytes: busybox truncate takes no T suffix. 16 TiB is EFBIG
	// on ext4 with 4 KiB blocks; 15 TiB is not.
	if out := e.mustRun(t, "vm", "exec", "h1", "--", "sh", "-c",
		"f=/root/.ssh/authorized_keys; truncate -s 17592186044416 $f 2>/dev/null || truncate -s 16492674416640 $f; sync; stat -c %s $f"); strings.TrimSpace(out) != "16492674416640" {
		t.Fatalf("sparse authorized_keys in the guest: size %q", out)
	}
	e.mustRun(t, "vm", "stop", "h1")
	base = vmHWM(t, pid, true)
	e.mustRun(t, "vm", "start", "h1")
	if peak := vmHWM(t, pid, false); peak-base > bound {
		t.Fatalf("daemon peak RSS %d -> %d bytes starting a VM with a 15 TiB authorized_keys", base, peak)
	}
	out := e.mustRun(t, "vm", "exec", "h1", "--", "sh", "-c", "ls -l /root/.ssh/")
	if !strings.Contains(out, "authorized_keys"+imagebuild.SetAsideSuffix) || !strings.Contains(out, "16492674416640") {
		t.Fatalf("after the start, /root/.ssh:\n%s", out)
	}

	// The guest that never answers.
	e.mustRun(t, "vm", "create", "--image", "busybox", "--name", "h2")
	qpid := int(e.inspect(t, "h2")["pid"].(float64))
	if err := syscall.Kill(qpid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(qpid, syscall.SIGCONT)
	createDone := make(chan error, 1)
	rotateDone := make(chan error, 1)
	var rot api.SSHKeyRotateResult
	go func() { rotateDone <- c.Call(context.Background(), api.MethodSSHKeyRotate, nil, &rot) }()
	go func() {
		_, stderr, err := e.run("vm", "create", "--image", "busybox", "--name", "h3")
		if err != nil {
			err = fmt.Errorf("%v: %s", err, stderr)
		}
		createDone <- err
	}()
	if err := <-rotateDone; err != nil {
		t.Fatalf("rotate with a silent guest: %v", err)
	}
	if !slices.Contains(rot.VMsFailed, "h2") || slices.Contains(rot.VMsFailed, "h1") {
		t.Fatalf("rotate: VMs failed %v, want h2 (silent) and not h1", rot.VMsFailed)
	}
	if err := <-createDone; err != nil {
		t.Fatalf("create beside the rotation: %v", err)
	}
	for _, vm := range []string{"h1", "h3"} {
		if out := e.mustRun(t, "vm", "exec", vm, "--", "echo", "ok"); out != "ok\n" {
			t.Fatalf("vm exec %s after the rotation: %q", vm, out)
		}
	}
	syscall.Kill(qpid, syscall.SIGCONT)
	e.mustRun(t, "vm", "rm", "-f", "h1", "h2", "h3")
}
