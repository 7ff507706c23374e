package vmm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Process is a VMM process, either started by this daemon (Spawn) or adopted
// from a previous one (Attach). It is safe for concurrent use.
type Process struct {
	pid   int
	start uint64

	done chan struct{} // closed when the process is gone
	// err is the exit error of a spawned child; written before done closes.
	err error
}

// SpawnConfig says how to start a VMM process.
type SpawnConfig struct {
	Path   string
	Args   []string
	Stdout string // file the process's stdout goes to (appended, created 0640)
	// StdoutFile, when set, is the process's stdout instead of Stdout (a
	// pipe the driver reads, e.g. a console it caps).
	StdoutFile *os.File
	Stderr     string // same for stderr; may equal Stdout
	// ExtraFiles are inherited as fds 3, 4, … (exec.Cmd.ExtraFiles).
	ExtraFiles []*os.File
	// Dir is the working directory ("": the daemon's).
	Dir string
	// Argv0, when set, is the process's argv[0] instead of Path (a
	// re-exec of this binary as a helper, see internal/vmm/sharefs).
	Argv0 string
	// Attr, when set, adds namespaces and credentials; Setsid is always
	// set on top.
	Attr *syscall.SysProcAttr
}

// Spawn starts a VMM that survives its parent: a new session (so a signal
// to the daemon's process group does not reach it), stdin on /dev/null,
// stdout and stderr on files (a pipe would break when the daemon dies), and
// no context (a daemon context ending must not kill VMs).
func Spawn(c SpawnConfig) (*Process, error) {
	stdout := c.StdoutFile
	if stdout == nil {
		var err error
		if stdout, err = os.OpenFile(c.Stdout, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640); err != nil {
			return nil, err
		}
		defer stdout.Close()
	}
	var err error
	stderr := stdout
	if c.Stderr != "" && c.Stderr != c.Stdout {
		stderr, err = os.OpenFile(c.Stderr, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			return nil, err
		}
		defer stderr.Close()
	}
	cmd := exec.Command(c.Path, c.Args...)
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	cmd.ExtraFiles = c.ExtraFiles
	cmd.Dir = c.Dir
	if c.Argv0 != "" {
		cmd.Args[0] = c.Argv0
	}
	attr := syscall.SysProcAttr{}
	if c.Attr != nil {
		attr = *c.Attr
	}
	attr.Setsid = true
	cmd.SysProcAttr = &attr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", c.Path, err)
	}
	p := &Process{pid: cmd.Process.Pid, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait() // reaps the child: no zombie left behind
		close(p.done)
	}()
	st, err := StartTime(p.pid)
	if err != nil {
		// It exited already (and may be reaped); report how.
		<-p.done
		return nil, fmt.Errorf("%s exited at once: %v", c.Path, p.err)
	}
	p.start = st
	return p, nil
}

// Attach re-attaches to the process pid that started at clock tick start
// (StartTime). mustMention, when not empty, must appear in its command line:
// a second check that the pid still names our VMM.
func Attach(pid int, start uint64, mustMention string) (*Process, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("pid %d: %w", pid, ErrNotRunning)
	}
	st, err := StartTime(pid)
	if err != nil || st != start {
		return nil, fmt.Errorf("pid %d (start time %d): %w", pid, start, ErrNotRunning)
	}
	if mustMention != "" {
		cl, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			return nil, fmt.Errorf("pid %d: %w", pid, ErrNotRunning)
		}
		if !bytes.Contains(cl, []byte(mustMention)) {
			return nil, fmt.Errorf("pid %d runs %q, not a VMM using %s: %w", pid,
				strings.ReplaceAll(string(cl), "\x00", " "), mustMention, ErrNotRunning)
		}
	}
	p := &Process{pid: pid, start: start, done: make(chan struct{})}
	go p.poll()
	return p, nil
}

// poll watches an adopted process, which is not our child and so cannot be
// waited for.
func (p *Process) poll() {
	for p.alive() {
		time.Sleep(100 * time.Millisecond)
	}
	close(p.done)
}

// alive reports whether pid still names the same, not yet exited, process.
func (p *Process) alive() bool {
	st, err := StartTime(p.pid)
	return err == nil && st == p.start
}

// PID returns the process id.
func (p *Process) PID() int { return p.pid }

// StartTime returns the recorded start time (see the package StartTime).
func (p *Process) StartTime() uint64 { return p.start }

// Done is closed once the process is gone.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process is gone.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait returns when the process is gone. For a spawned process it returns
// its exit error (nil on exit status 0); an adopted one's status is unknown
// and Wait returns nil.
func (p *Process) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Signal sends sig unless the process is gone (never to a recycled pid).
func (p *Process) Signal(sig syscall.Signal) error {
	if p.Exited() || !p.alive() {
		return nil
	}
	if err := syscall.Kill(p.pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal pid %d: %w", p.pid, err)
	}
	return nil
}

// killWait bounds how long Kill waits for a SIGKILLed process to vanish.
const killWait = 30 * time.Second

// Kill sends SIGKILL and waits for the process to be gone.
func (p *Process) Kill() error {
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(killWait):
		return fmt.Errorf("pid %d still present %s after SIGKILL", p.pid, killWait)
	}
}

// StartTime reads field 22 (starttime, clock ticks after boot) of
// /proc/<pid>/stat. A zombie counts as gone: it will never run again.
func StartTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// comm (field 2) is in parentheses and may hold spaces: split after
	// the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state), so field 22 is f[19].
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	if f[0] == "Z" || f[0] == "X" {
		return 0, fmt.Errorf("pid %d has exited", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// WaitForSocket waits until path accepts connections via dial, the process
// dies, or ctx ends. VMMs create their control sockets a moment after exec.
func WaitForSocket[T any](ctx context.Context, p *Process, what string, dial func() (T, error)) (T, error) {
	var zero T
	delay := 5 * time.Millisecond
	for {
		c, err := dial()
		if err == nil {
			return c, nil
		}
		select {
		case <-p.Done():
			return zero, fmt.Errorf("%s: VMM exited before it was ready: %v", what, p.err)
		case <-ctx.Done():
			return zero, fmt.Errorf("%s: %w (last error: %v)", what, ctx.Err(), err)
		case <-time.After(delay):
		}
		if delay < 100*time.Millisecond {
			delay *= 2
		}
	}
}

// Base is the part of a Handle every process-backed driver shares: the VMM
// process and the state to persist. Drivers embed it.
type Base struct {
	Proc *Process
	St   StateInfo // immutable after creation
}

func (b *Base) PID() int                       { return b.Proc.PID() }
func (b *Base) State() (StateInfo, error)      { return b.St, nil }
func (b *Base) Wait(ctx context.Context) error { return b.Proc.Wait(ctx) }
func (b *Base) Kill() error                    { return b.Proc.Kill() }

// AttachState re-attaches to the VMM st describes, refusing state written
// by another driver; the process must still mention its control socket.
func AttachState(driver string, st StateInfo) (*Process, error) {
	if st.Driver != driver {
		return nil, fmt.Errorf("state is for driver %q, not %s", st.Driver, driver)
	}
	if st.Mention != "" {
		return Attach(st.PID, st.StartTime, st.Mention)
	}
	return Attach(st.PID, st.StartTime, st.ControlSocket)
}
