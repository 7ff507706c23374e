package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"banger/internal/guestproto"
)

// The host's Setup request (guestproto.SetupRequest), sent once per boot
// right after the agent answers: the VM's environment for every session,
// and the main process banger-init starts and supervises.
//
// The main process runs argv directly (no shell), stdin /dev/null, stdout
// and stderr on the console (the host's console.log, `banger vm logs`), in
// its own session. When it ends and its restart policy says so, it is
// started again after a backoff (100 ms doubling to 5 s, back to 100 ms
// after a run of 10 s); otherwise its status is recorded on system.cow
// (guestproto.MainExitPath, read by the host after the VMM exits) and the
// guest powers off, as a container stops with its process.

// guestState is what the Setup request set.
type guestState struct {
	mode     string // InitBanger or InitImage: what this boot runs as
	initPath string // what /sbin/init resolved to, if it exists

	// initUp, when set, is closed once the image's init answers (InitImage
	// with systemd: initmode.go's waitInitUp); the Setup reply waits for
	// it, so a create returns with the init ready to be talked to and a
	// main process starts under a running init.
	initUp <-chan struct{}

	mu          sync.Mutex // guards env and mainStarted
	env         []string
	mainStarted bool
}

func (g *guestState) vmEnv() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.env
}

// shuttingDown is set once a poweroff began (shutdown, or the image init
// asked to power off): a main process killed by it is neither restarted nor
// recorded as having exited by itself.
var shuttingDown atomic.Bool

// exitRecordPath is MainExitPath on the mounted system.cow (upperDir), a
// variable for tests.
var exitRecordPath = filepath.Join(upperDir, guestproto.MainExitPath)

// handleSetup applies a Setup and replies with a SetupReply, or refuses
// with the reason as the reply payload. A second Setup in one boot (a host
// that retried) replaces the env; the main process is started only once.
func (s *sshServer) handleSetup(r *ssh.Request) {
	setup, err := guestproto.DecodeSetup(r.Payload)
	if err != nil {
		r.Reply(false, []byte(err.Error()))
		return
	}
	g := &s.guest
	if g.initUp != nil {
		<-g.initUp // bounded by waitInitUp's timeout
	}
	g.mu.Lock()
	g.env = setup.Env
	start := setup.Main != nil && !g.mainStarted
	g.mu.Unlock()
	if start {
		if err := s.startMain(*setup.Main); err != nil {
			s.logf("main process: %v", err)
			r.Reply(false, []byte("main process: "+err.Error()))
			return
		}
		g.mu.Lock()
		g.mainStarted = true
		g.mu.Unlock()
	}
	mode := g.mode
	if mode == "" {
		mode = guestproto.InitBanger
	}
	b, _ := json.Marshal(guestproto.SetupReply{Init: mode, InitPath: g.initPath})
	r.Reply(true, b)
}

// mainCmd builds one run of the main process.
func (s *sshServer) mainCmd(m guestproto.MainProcess) (*exec.Cmd, error) {
	path := m.Argv[0]
	cmd := &exec.Cmd{Args: m.Argv}
	if err := s.prepareCmd(cmd, s.guest.vmEnv(), nil, execSettings{workdir: m.WorkingDir, user: m.User}); err != nil {
		return nil, err
	}
	// argv[0] without a slash is looked up in the command's own PATH (the
	// image's Env), as a container runtime does.
	if filepath.Base(path) == path {
		lp, err := lookPathIn(path, envValue(cmd.Env, "PATH"))
		if err != nil {
			return nil, err
		}
		path = lp
	}
	cmd.Path = path
	cmd.SysProcAttr = sysProcAttr(cmd)
	cmd.SysProcAttr.Setsid = true
	return cmd, nil
}

// startMain checks that the main process can start (user, directory,
// executable) so that a bad spec fails the host's start, then supervises it.
func (s *sshServer) startMain(m guestproto.MainProcess) error {
	cmd, err := s.mainCmd(m)
	if err != nil {
		return err
	}
	os.Remove(exitRecordPath)
	done, err := s.startWithConsole(cmd)
	if err != nil {
		return err
	}
	s.logf("main process started: %q (pid %d, restart %s)", m.Argv, cmd.Process.Pid, restartPolicy(m))
	go s.superviseMain(m, cmd, done)
	return nil
}

func restartPolicy(m guestproto.MainProcess) string {
	if m.Restart == "" {
		return guestproto.RestartNo
	}
	return m.Restart
}

// startWithConsole starts cmd with stdin /dev/null and output on the console.
func (s *sshServer) startWithConsole(cmd *exec.Cmd) (<-chan unix.WaitStatus, error) {
	null, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	defer null.Close()
	out, err := os.OpenFile(consolePath, os.O_WRONLY|os.O_APPEND|unix.O_NOCTTY, 0)
	if err != nil {
		out = nil // no console (tests): output is discarded
	} else {
		defer out.Close()
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = null, out, out
	return s.procs.start(cmd)
}

// consolePath is where the main process writes; tests point it at a file.
var consolePath = "/dev/console"

func exitCode(ws unix.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

func (s *sshServer) superviseMain(m guestproto.MainProcess, cmd *exec.Cmd, done <-chan unix.WaitStatus) {
	const (
		minDelay = 100 * time.Millisecond
		maxDelay = 5 * time.Second
		stable   = 10 * time.Second
	)
	delay := minDelay
	for {
		started := time.Now()
		ws := <-done
		cmd.Process.Release()
		if shuttingDown.Load() {
			return
		}
		code := exitCode(ws)
		s.logf("main process exited with status %d", code)
		restart := m.Restart == guestproto.RestartAlways || m.Restart == guestproto.RestartOnFailure && code != 0
		if !restart {
			s.mainEnded(code)
			return
		}
		if time.Since(started) > stable {
			delay = minDelay
		}
		time.Sleep(delay)
		delay = min(2*delay, maxDelay)
		if shuttingDown.Load() {
			return
		}
		var err error
		if cmd, err = s.mainCmd(m); err == nil {
			done, err = s.startWithConsole(cmd)
		}
		if err != nil {
			s.logf("main process: restart: %v", err)
			s.mainEnded(127)
			return
		}
		s.logf("main process restarted (pid %d)", cmd.Process.Pid)
	}
}

// mainEnded records the final status for the host and powers off.
func (s *sshServer) mainEnded(code int) {
	if err := os.MkdirAll(filepath.Dir(exitRecordPath), 0o755); err == nil {
		if err := writeFileAtomic(exitRecordPath, []byte(guestproto.ExitRecord(code)), 0o644); err != nil {
			s.logf("record main process status: %v", err)
		}
	}
	unix.Sync()
	if s.onPoweroff != nil {
		s.logf("the main process ended (status %d): powering off", code)
		go s.onPoweroff()
	}
}

func envValue(env []string, key string) string {
	v := ""
	for _, kv := range env {
		if len(kv) > len(key) && kv[len(key)] == '=' && kv[:len(key)] == key {
			v = kv[len(key)+1:]
		}
	}
	return v
}

// lookPathIn finds file in the colon-separated dirs of path (the command's
// PATH, not banger-init's own).
func lookPathIn(file, path string) (string, error) {
	if path == "" {
		path = defaultPath
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, file)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", &exec.Error{Name: file, Err: exec.ErrNotFound}
}
