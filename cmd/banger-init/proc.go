package main

import (
	"errors"
	"os/exec"
	"sync"

	"golang.org/x/sys/unix"
)

// procTable starts processes and delivers their exit status.
//
// As PID 1, banger-init must reap every orphan that the kernel reparents to
// it, with wait4(-1). That would steal the status of processes os/exec
// started, so exec.Cmd.Wait is never used: the reaper is the only waiter and
// hands each status to whoever registered that pid. start holds mu across
// fork and registration, and the reaper takes mu before looking a pid up, so
// a child that exits at once is still delivered.
//
// Outside PID 1 (tests on the host) reapAll is false and each process gets
// its own wait4(pid) goroutine, leaving the test binary's other children
// alone.
type procTable struct {
	reapAll bool

	mu      sync.Mutex // guards waiting
	waiting map[int]chan unix.WaitStatus
}

func newProcTable(reapAll bool) *procTable {
	return &procTable{reapAll: reapAll, waiting: map[int]chan unix.WaitStatus{}}
}

// start runs cmd, whose Stdin/Stdout/Stderr must be *os.File or nil so that
// os/exec starts no copying goroutines that would need Wait. The returned
// channel receives the exit status once.
func (p *procTable) start(cmd *exec.Cmd) (<-chan unix.WaitStatus, error) {
	ch := make(chan unix.WaitStatus, 1)
	p.mu.Lock()
	err := cmd.Start()
	if err != nil {
		p.mu.Unlock()
		return nil, err
	}
	pid := cmd.Process.Pid
	p.waiting[pid] = ch
	p.mu.Unlock()
	if !p.reapAll {
		go func() {
			var ws unix.WaitStatus
			for {
				_, err := unix.Wait4(pid, &ws, 0, nil)
				if !errors.Is(err, unix.EINTR) {
					break
				}
			}
			p.deliver(pid, ws)
		}()
	}
	return ch, nil
}

// reap collects every exited child without blocking; PID 1 calls it on each
// SIGCHLD.
func (p *procTable) reap() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
		p.deliver(pid, ws)
	}
}

func (p *procTable) deliver(pid int, ws unix.WaitStatus) {
	p.mu.Lock()
	ch := p.waiting[pid]
	delete(p.waiting, pid)
	p.mu.Unlock()
	if ch != nil {
		ch <- ws
	}
}
