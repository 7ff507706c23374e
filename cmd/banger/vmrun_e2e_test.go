package main

import (
	"bufio"
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// cliProc is a running banger CLI whose output lines a test waits for.
type cliProc struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	out    strings.Builder // stdout and stderr lines as they came
	stderr strings.Builder
	lines  chan struct{} // ticks on every line
	done   chan struct{}
	err    error
}

func (e *vmEnv) startCLI(t *testing.T, args ...string) *cliProc {
	t.Helper()
	p := &cliProc{cmd: exec.Command(bangerBin, append([]string{"--socket", e.socket}, args...)...),
		lines: make(chan struct{}, 1), done: make(chan struct{})}
	stdout, _ := p.cmd.StdoutPipe()
	stderr, _ := p.cmd.StderrPipe()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var readers sync.WaitGroup
	readers.Add(2)
	go p.read(stdout, false, &readers)
	go p.read(stderr, true, &readers)
	go func() {
		readers.Wait()
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

func (p *cliProc) read(r io.Reader, isErr bool, wg *sync.WaitGroup) {
	defer wg.Done()
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		p.mu.Lock()
		p.out.WriteString(sc.Text() + "\n")
		if isErr {
			p.stderr.WriteString(sc.Text() + "\n")
		}
		p.mu.Unlock()
		select {
		case p.lines <- struct{}{}:
		default:
		}
	}
}

func (p *cliProc) output() string { p.mu.Lock(); defer p.mu.Unlock(); return p.out.String() }

// waitFor waits until the output holds s.
func (p *cliProc) waitFor(t *testing.T, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for !strings.Contains(p.output(), s) {
		select {
		case <-p.lines:
		case <-p.done:
			if !strings.Contains(p.output(), s) {
				t.Fatalf("banger exited (%v) before printing %q:\n%s", p.err, s, p.output())
			}
		case <-deadline:
			t.Fatalf("no %q after %s:\n%s", s, timeout, p.output())
		}
	}
}

// wait waits for the CLI to exit and returns its exit status.
func (p *cliProc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return exitCode(p.err)
	case <-time.After(timeout):
		t.Fatalf("banger still running %s after the signal:\n%s", timeout, p.output())
		return -1
	}
}

// vmState is the state of the VM named name, "" when it is not listed.
func (e *vmEnv) vmState(t *testing.T, name string) string {
	t.Helper()
	var vms []struct{ Name, State string }
	if err := json.Unmarshal([]byte(e.mustRun(t, "vm", "ls", "-a", "-o", "json")), &vms); err != nil {
		t.Fatal(err)
	}
	for _, v := range vms {
		if v.Name == name {
			return v.State
		}
	}
	return ""
}

// waitGone fails unless the VM disappears from `vm ls -a` within timeout.
func (e *vmEnv) waitGone(t *testing.T, name string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := e.vmState(t, name)
		if st == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("VM %s still listed (state %s) %s after banger exited\ndaemon log tail:\n%s", name, st, timeout, tail(e.log.String(), 20))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestVMRunInterrupted signals `banger vm run` at each stage that takes
// time: --rm must remove the VM and say so, exit 128+signal; without --rm
// the VM is left and the user told how to remove it. One daemon serves all
// cases (each boot on TCG is slow).
func TestVMRunInterrupted(t *testing.T) {
	e := newVMEnv(t)

	t.Run("rm_SIGINT_during_wait_ready", func(t *testing.T) {
		p := e.startCLI(t, "vm", "run", "--rm", "--image", "busybox", "--name", "intr-a", "--", "sleep", "100")
		p.waitFor(t, "==> wait_ready", 3*time.Minute)
		p.cmd.Process.Signal(syscall.SIGINT)
		if code := p.wait(t, 60*time.Second); code != 130 {
			t.Fatalf("exit status %d, want 130:\n%s", code, p.output())
		}
		if !strings.Contains(p.output(), "interrupted: removed VM intr-a") {
			t.Fatalf("no interrupted line:\n%s", p.output())
		}
		e.waitGone(t, "intr-a", 10*time.Second)
		t.Logf("banger said:\n%s", p.output())
	})

	t.Run("rm_SIGINT_while_command_runs", func(t *testing.T) {
		p := e.startCLI(t, "vm", "run", "--rm", "--image", "busybox", "--name", "intr-b", "--", "sh", "-c", "echo started; exec sleep 100")
		p.waitFor(t, "started", 3*time.Minute)
		p.cmd.Process.Signal(syscall.SIGINT)
		if code := p.wait(t, 60*time.Second); code != 130 {
			t.Fatalf("exit status %d, want 130:\n%s", code, p.output())
		}
		if !strings.Contains(p.output(), "interrupted: removed VM intr-b") {
			t.Fatalf("no interrupted line:\n%s", p.output())
		}
		e.waitGone(t, "intr-b", 10*time.Second)
	})

	t.Run("no_rm_SIGTERM_during_wait_ready", func(t *testing.T) {
		p := e.startCLI(t, "vm", "run", "--image", "busybox", "--name", "intr-c", "--", "true")
		p.waitFor(t, "==> wait_ready", 3*time.Minute)
		p.cmd.Process.Signal(syscall.SIGTERM)
		if code := p.wait(t, 60*time.Second); code != 143 {
			t.Fatalf("exit status %d, want 143:\n%s", code, p.output())
		}
		if out := p.output(); !strings.Contains(out, "interrupted: VM intr-c is left as it is (state error)") || !strings.Contains(out, "banger vm rm -f intr-c") {
			t.Fatalf("the user is not told what is left and how to remove it:\n%s", out)
		}
		if st := e.vmState(t, "intr-c"); st != "error" {
			t.Fatalf("state %q: want the VM kept in state error (its boot was cancelled)", st)
		}
		e.mustRun(t, "vm", "rm", "-f", "intr-c")
		t.Logf("banger said:\n%s", p.output())
	})

	// A client that dies without a word (SIGKILL) mid-create: once the
	// daemon notices the hang-up the VM is in state error or gone, and it
	// is never running.
	t.Run("client_SIGKILL_mid_create", func(t *testing.T) {
		p := e.startCLI(t, "vm", "create", "--image", "busybox", "--name", "intr-d")
		p.waitFor(t, "==> wait_ready", 3*time.Minute)
		p.cmd.Process.Signal(syscall.SIGKILL)
		p.wait(t, 10*time.Second)
		deadline := time.Now().Add(60 * time.Second)
		for {
			st := e.vmState(t, "intr-d")
			if st == "running" {
				t.Fatalf("a create whose caller was killed ended running\ndaemon log tail:\n%s", tail(e.log.String(), 20))
			}
			if st == "error" || st == "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("state still %s 60s after the client was killed", st)
			}
			time.Sleep(250 * time.Millisecond)
		}
		// Settled: it stays that way (the boot was unwound, not left going).
		time.Sleep(2 * time.Second)
		if st := e.vmState(t, "intr-d"); st == "running" || st == "starting" {
			t.Fatalf("state %s after settling", st)
		}
	})
}
