package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"banger/internal/guestproto"
)

// sshServer is the SSH server banger-init runs on TCP :22 and on the agent
// channel, so any image gets exec, a pty shell and sftp without an sshd.
// Every session runs as root.
type sshServer struct {
	keyMu   sync.Mutex // guards hostKey
	hostKey ssh.Signer // replaced by an identity request (identity.go)

	authorizedKeys string   // re-read on every authentication attempt
	shell          string   // runs exec requests as `shell -c CMD`
	self           string   // this binary, run as the sftp subsystem
	passwd         string   // /etc/passwd, for root's login shell
	home           string   // HOME and working directory
	env            []string // base environment of every command
	procs          *procTable
	onPoweroff     func() // PoweroffRequest handler; nil refuses it
	// onSetTime sets the clock to t and returns the clock's reading
	// before (SetTimeRequest); nil refuses the request.
	onSetTime func(t time.Time) (time.Time, error)
	// onIdentity applies a restored guest's new identity and returns its
	// new host key (IdentityRequest); nil refuses the request.
	onIdentity func(id guestproto.Identity) (ssh.Signer, error)
	guest      guestState // the host's Setup: VM env, main process (mainproc.go)
	logf       func(format string, args ...any)
}

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func newSSHServer(hostKey ssh.Signer, procs *procTable, logf func(string, ...any)) *sshServer {
	s := &sshServer{
		authorizedKeys: guestproto.AuthorizedKeysPath,
		shell:          "/bin/sh",
		self:           "/proc/self/exe", // works after switch_root, when the initramfs file is gone
		passwd:         "/etc/passwd",
		home:           "/root",
		procs:          procs,
		logf:           logf,
	}
	s.env = []string{"HOME=" + s.home, "PATH=" + defaultPath, "USER=root", "LOGNAME=root", "SHELL=/bin/sh"}
	s.hostKey = hostKey
	return s
}

// config is a fresh server config per connection, so that a new host key
// (identity.go) serves every connection after it without racing the
// handshakes under way.
func (s *sshServer) config() *ssh.ServerConfig {
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	c := &ssh.ServerConfig{
		PublicKeyCallback: s.checkKey,
		ServerVersion:     "SSH-2.0-banger-init",
	}
	c.AddHostKey(s.hostKey)
	return c
}

func (s *sshServer) setHostKey(k ssh.Signer) {
	s.keyMu.Lock()
	s.hostKey = k
	s.keyMu.Unlock()
}

func (s *sshServer) checkKey(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
	data, err := os.ReadFile(s.authorizedKeys)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", s.authorizedKeys, err)
	}
	want := key.Marshal()
	for len(data) > 0 {
		k, _, _, rest, err := ssh.ParseAuthorizedKey(data)
		if err != nil {
			break // no more parseable keys
		}
		if bytes.Equal(k.Marshal(), want) {
			return &ssh.Permissions{}, nil
		}
		data = rest
	}
	return nil, fmt.Errorf("key %s not in %s", ssh.FingerprintSHA256(key), s.authorizedKeys)
}

// serveConn runs one SSH connection to its end.
func (s *sshServer) serveConn(c net.Conn) error {
	defer c.Close()
	sc, chans, reqs, err := ssh.NewServerConn(c, s.config())
	if err != nil {
		return fmt.Errorf("ssh handshake: %w", err)
	}
	defer sc.Close()
	go s.globalRequests(reqs)
	var wg sync.WaitGroup
	for nc := range chans {
		if nc.ChannelType() == "direct-tcpip" {
			wg.Add(1)
			go func() {
				defer wg.Done()
				directTCPIP(nc)
			}()
			continue
		}
		if nc.ChannelType() != "session" {
			nc.Reject(ssh.UnknownChannelType, "banger-init serves only session and direct-tcpip channels")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			(&session{srv: s, ch: ch}).serve(creqs)
		}()
	}
	wg.Wait()
	return nil
}

func (s *sshServer) globalRequests(reqs <-chan *ssh.Request) {
	for r := range reqs {
		switch r.Type {
		case guestproto.PingRequest:
			r.Reply(true, nil)
		case guestproto.SetupRequest:
			s.handleSetup(r)
		case guestproto.PoweroffRequest:
			r.Reply(s.onPoweroff != nil, nil)
			if s.onPoweroff != nil {
				go s.onPoweroff()
			}
		case guestproto.SetTimeRequest:
			s.setTime(r)
		case guestproto.IdentityRequest:
			s.identity(r)
		default:
			if r.WantReply {
				r.Reply(false, nil)
			}
		}
	}
}

// setTime answers SetTimeRequest: the payload must decode (8 bytes, a time
// between 2000 and 2200) or the request is refused and the clock left alone.
func (s *sshServer) setTime(r *ssh.Request) {
	t, err := guestproto.DecodeTime(r.Payload)
	if err != nil || s.onSetTime == nil {
		if err != nil {
			s.logf("%s: %v", guestproto.SetTimeRequest, err)
		}
		r.Reply(false, nil)
		return
	}
	was, err := s.onSetTime(t)
	if err != nil {
		s.logf("set the clock: %v", err)
		r.Reply(false, nil)
		return
	}
	r.Reply(true, guestproto.EncodeTime(was))
}

// session is one "session" channel: env and pty requests, then one of exec,
// shell or subsystem.
type session struct {
	srv *sshServer
	ch  ssh.Channel

	mu       sync.Mutex // guards the fields below
	env      []string
	settings execSettings // BANGER_WORKDIR, BANGER_USER (execenv.go)
	pty      *ptyRequest
	ptmx     *os.File
	proc     *os.Process
	started  bool
}

type ptyRequest struct {
	Term          string
	Columns, Rows uint32
	Width, Height uint32
	Modes         string
}

type windowChange struct {
	Columns, Rows uint32
	Width, Height uint32
}

func (ss *session) serve(reqs <-chan *ssh.Request) {
	for r := range reqs {
		ok := false
		switch r.Type {
		case "env":
			var kv struct{ Name, Value string }
			if ssh.Unmarshal(r.Payload, &kv) == nil {
				ok = ss.sessionEnv(kv.Name, kv.Value)
			}
		case "pty-req":
			var p ptyRequest
			if ssh.Unmarshal(r.Payload, &p) == nil {
				ss.mu.Lock()
				ss.pty = &p
				ss.mu.Unlock()
				ok = true
			}
		case "window-change":
			var w windowChange
			if ssh.Unmarshal(r.Payload, &w) == nil {
				ss.mu.Lock()
				if ss.pty != nil {
					ss.pty.Columns, ss.pty.Rows = w.Columns, w.Rows
				}
				if ss.ptmx != nil {
					pty.Setsize(ss.ptmx, &pty.Winsize{Cols: uint16(w.Columns), Rows: uint16(w.Rows)})
				}
				ss.mu.Unlock()
				ok = true
			}
		case "signal":
			var sig struct{ Signal string }
			if ssh.Unmarshal(r.Payload, &sig) == nil {
				ok = ss.signal(sig.Signal)
			}
		case "exec":
			var cmd struct{ Command string }
			if ssh.Unmarshal(r.Payload, &cmd) == nil && ss.claim() {
				ok = true
				r.Reply(true, nil)
				go ss.run(ss.srv.shell, []string{ss.srv.shell, "-c", cmd.Command})
				continue
			}
		case "shell":
			if ss.claim() {
				sh := ss.srv.loginShell()
				r.Reply(true, nil)
				// A leading '-' in argv[0] asks for a login shell (profile).
				go ss.run(sh, []string{"-" + filepath.Base(sh)})
				continue
			}
		case "subsystem":
			var sub struct{ Name string }
			if ssh.Unmarshal(r.Payload, &sub) == nil && sub.Name == "sftp" && ss.claim() {
				r.Reply(true, nil)
				go ss.sftp()
				continue
			}
		}
		if r.WantReply {
			r.Reply(ok, nil)
		}
	}
}

// claim marks the session as running a program; a second exec/shell on the
// same channel is refused, as in OpenSSH.
func (ss *session) claim() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.started {
		return false
	}
	ss.started = true
	return true
}

var signalsByName = map[string]syscall.Signal{
	"ABRT": unix.SIGABRT, "ALRM": unix.SIGALRM, "FPE": unix.SIGFPE, "HUP": unix.SIGHUP,
	"ILL": unix.SIGILL, "INT": unix.SIGINT, "KILL": unix.SIGKILL, "PIPE": unix.SIGPIPE,
	"QUIT": unix.SIGQUIT, "SEGV": unix.SIGSEGV, "TERM": unix.SIGTERM, "USR1": unix.SIGUSR1,
	"USR2": unix.SIGUSR2,
}

func (ss *session) signal(name string) bool {
	sig, ok := signalsByName[name]
	ss.mu.Lock()
	p := ss.proc
	ss.mu.Unlock()
	if !ok || p == nil {
		return false
	}
	// The command leads its own process group: signal all of it, like a
	// terminal would, so `sh -c 'a | b'` stops as a whole.
	return unix.Kill(-p.Pid, sig) == nil || p.Signal(sig) == nil
}

// loginShell is root's shell from /etc/passwd when it exists, else /bin/sh.
func (s *sshServer) loginShell() string {
	f, err := os.Open(s.passwd)
	if err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Split(sc.Text(), ":")
			if len(fields) == 7 && fields[0] == "root" && fields[6] != "" {
				if st, err := os.Stat(fields[6]); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
					return fields[6]
				}
			}
		}
	}
	return s.shell
}

func (ss *session) finish(status unix.WaitStatus) {
	ch := ss.ch
	ch.CloseWrite()
	switch {
	case status.Signaled():
		name := strings.TrimPrefix(unix.SignalName(status.Signal()), "SIG")
		ch.SendRequest("exit-signal", false, ssh.Marshal(struct {
			Signal     string
			CoreDumped bool
			Error      string
			Lang       string
		}{name, status.CoreDump(), "", ""}))
	default:
		ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(status.ExitStatus())}))
	}
	ch.Close()
}

// fail reports a command that could not start: message on stderr, exit 127
// like a shell's "command not found".
func (ss *session) fail(format string, args ...any) {
	fmt.Fprintf(ss.ch.Stderr(), "banger-init: "+format+"\n", args...)
	ss.finish(unix.WaitStatus(127 << 8))
}

func (ss *session) run(path string, argv []string) {
	if _, err := os.Stat(path); err != nil {
		ss.fail("cannot run commands: this image has no %s (%v); use an image that ships a shell", path, err)
		return
	}
	ss.mu.Lock()
	sessEnv := append([]string(nil), ss.env...)
	set := ss.settings
	ptyReq := ss.pty
	ss.mu.Unlock()
	cmd := &exec.Cmd{Path: path, Args: argv}
	if err := ss.srv.prepareCmd(cmd, ss.srv.guest.vmEnv(), sessEnv, set); err != nil {
		ss.fail("%v", err)
		return
	}
	if ptyReq != nil {
		ss.runPTY(cmd, ptyReq)
		return
	}
	ss.runPipes(cmd)
}

func (ss *session) runPipes(cmd *exec.Cmd) {
	var parentEnds, childEnds []*os.File
	closeAll := func(fs []*os.File) {
		for _, f := range fs {
			f.Close()
		}
	}
	for range 3 {
		r, w, err := os.Pipe()
		if err != nil {
			closeAll(parentEnds)
			closeAll(childEnds)
			ss.fail("pipe: %v", err)
			return
		}
		if len(childEnds) == 0 { // stdin: child reads
			childEnds, parentEnds = append(childEnds, r), append(parentEnds, w)
		} else {
			childEnds, parentEnds = append(childEnds, w), append(parentEnds, r)
		}
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = childEnds[0], childEnds[1], childEnds[2]
	cmd.SysProcAttr = sysProcAttr(cmd) // keeps prepareCmd's credentials
	cmd.SysProcAttr.Setpgid = true
	done, err := ss.srv.procs.start(cmd)
	closeAll(childEnds)
	if err != nil {
		closeAll(parentEnds)
		ss.fail("%s", startError(cmd, err))
		return
	}
	ss.setProc(cmd.Process)
	stdin, stdout, stderr := parentEnds[0], parentEnds[1], parentEnds[2]
	go func() {
		io.Copy(stdin, ss.ch)
		stdin.Close() // EOF from the client is EOF for the command
	}()
	var out sync.WaitGroup
	out.Add(2)
	go func() { defer out.Done(); io.Copy(ss.ch, stdout); stdout.Close() }()
	go func() { defer out.Done(); io.Copy(ss.ch.Stderr(), stderr); stderr.Close() }()
	status := <-done
	cmd.Process.Release()
	// Output ends when every writer (the command and anything it left
	// running with the same stdout) has closed it, as with OpenSSH.
	out.Wait()
	ss.finish(status)
}

func (ss *session) runPTY(cmd *exec.Cmd, req *ptyRequest) {
	ptmx, tty, err := pty.Open()
	if err != nil {
		ss.fail("open pty: %v (is devpts mounted?)", err)
		return
	}
	pty.Setsize(ptmx, &pty.Winsize{Cols: uint16(req.Columns), Rows: uint16(req.Rows)})
	term := req.Term
	if term == "" {
		term = "xterm"
	}
	cmd.Env = append(cmd.Env, "TERM="+term)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = sysProcAttr(cmd)
	cmd.SysProcAttr.Setsid, cmd.SysProcAttr.Setctty = true, true
	done, err := ss.srv.procs.start(cmd)
	tty.Close()
	if err != nil {
		ptmx.Close()
		ss.fail("%s", startError(cmd, err))
		return
	}
	ss.mu.Lock()
	ss.ptmx = ptmx
	ss.mu.Unlock()
	ss.setProc(cmd.Process)
	go io.Copy(ptmx, ss.ch)
	outDone := make(chan struct{})
	go func() { io.Copy(ss.ch, ptmx); close(outDone) }()
	status := <-done
	cmd.Process.Release()
	// The pty reports EIO once every holder of the terminal is gone; a
	// background job may keep it open forever, so drain briefly and then
	// hang up on it, as sshd does.
	select {
	case <-outDone:
	case <-time.After(500 * time.Millisecond):
	}
	ptmx.Close()
	ss.finish(status)
}

func (ss *session) setProc(p *os.Process) {
	ss.mu.Lock()
	ss.proc = p
	ss.mu.Unlock()
}

// sftp runs banger-init itself as the SFTP server (sftpServerArg) on the
// session's pipes, in root's home directory, like any command.
func (ss *session) sftp() {
	ss.run(ss.srv.self, []string{"banger-init", sftpServerArg})
}

// directTCPIP serves a "direct-tcpip" channel (RFC 4254 7.2): the host
// reaches a TCP port inside the guest over the agent channel, which is how
// `vm ssh`/`vm exec` reach the SSH server on :22 without any network and
// how the host can reach guest services when the guest has no route back.
func directTCPIP(nc ssh.NewChannel) {
	var req struct {
		Host     string
		Port     uint32
		OrigHost string
		OrigPort uint32
	}
	if err := ssh.Unmarshal(nc.ExtraData(), &req); err != nil {
		nc.Reject(ssh.ConnectionFailed, "bad direct-tcpip request")
		return
	}
	target := net.JoinHostPort(req.Host, strconv.Itoa(int(req.Port)))
	conn, err := net.DialTimeout("tcp", target, 10*time.Second)
	if err != nil {
		nc.Reject(ssh.ConnectionFailed, fmt.Sprintf("dial %s: %v", target, err))
		return
	}
	ch, reqs, err := nc.Accept()
	if err != nil {
		conn.Close()
		return
	}
	go ssh.DiscardRequests(reqs)
	done := make(chan struct{}, 2)
	go func() {
		io.Copy(conn, ch)
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		done <- struct{}{}
	}()
	go func() {
		io.Copy(ch, conn)
		ch.CloseWrite()
		done <- struct{}{}
	}()
	<-done
	<-done
	ch.Close()
	conn.Close()
}

// startError says what failed to start, and where: a child that cannot
// enter its working directory (an image's WorkingDir /root, mode 0700,
// with -u nobody) fails as "fork/exec /bin/sh: permission denied", which
// names neither.
func startError(cmd *exec.Cmd, err error) string {
	if cmd.Dir == "" {
		return fmt.Sprintf("start %s: %v", cmd.Path, err)
	}
	return fmt.Sprintf("start %s in working directory %s: %v (the user must be able to enter it; -w picks another)", cmd.Path, cmd.Dir, err)
}
