package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"banger/internal/agent"
	"banger/internal/guestproto"
)

// The SSH server on the host, over a socketpair, with the real agent
// client: everything but PID 1 duties and the guest's devices.

type testServer struct {
	srv      *sshServer
	home     string
	authKeys string
	signer   ssh.Signer
	poweroff atomic.Int32
}

func newTestServer(t *testing.T) *testServer {
	t.Helper()
	dir := t.TempDir()
	ts := &testServer{home: filepath.Join(dir, "root"), authKeys: filepath.Join(dir, "authorized_keys"), signer: testSigner(t)}
	os.Mkdir(ts.home, 0o700)
	if err := os.WriteFile(ts.authKeys, ssh.MarshalAuthorizedKey(ts.signer.PublicKey()), 0o600); err != nil {
		t.Fatal(err)
	}
	hostKey, err := loadOrCreateHostKey(filepath.Join(dir, "etc/banger/ssh_host_ed25519_key"))
	if err != nil {
		t.Fatal(err)
	}
	ts.srv = newSSHServer(hostKey, newProcTable(false), t.Logf)
	ts.srv.authorizedKeys = ts.authKeys
	ts.srv.home = ts.home
	ts.srv.passwd = filepath.Join(dir, "passwd") // absent: /bin/sh
	ts.srv.env = []string{"HOME=" + ts.home, "PATH=" + defaultPath}
	ts.srv.onPoweroff = func() { ts.poweroff.Add(1) }
	return ts
}

// connect serves one connection over a socketpair and dials it.
func (ts *testServer) connect(t *testing.T, signer ssh.Signer) (*agent.Client, error) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	mk := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "sock")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	srvConn, cliConn := mk(fds[0]), mk(fds[1])
	go func() {
		if err := agentHandshake(srvConn); err != nil {
			srvConn.Close()
			return
		}
		ts.srv.serveConn(srvConn)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := agent.Dial(ctx, cliConn, signer, agent.TOFU(filepath.Join(t.TempDir(), "known_hosts")))
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

func exec1(t *testing.T, c *agent.Client, cmd string, env map[string]string, stdin io.Reader) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code, err := c.Exec(context.Background(), cmd, env, stdin, &out, &errb)
	if err != nil {
		t.Fatalf("exec %q: %v", cmd, err)
	}
	return out.String(), errb.String(), code
}

func TestServerExec(t *testing.T) {
	ts := newTestServer(t)
	c, err := ts.connect(t, ts.signer)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Ping(context.Background()); err != nil {
		t.Fatalf("ping: %v", err)
	}
	cases := []struct {
		cmd, stdin  string
		env         map[string]string
		out, errOut string
		code        int
	}{
		{cmd: "echo hi", out: "hi\n"},
		{cmd: "sh -c 'exit 7'", code: 7},
		{cmd: "echo o; echo e >&2; exit 2", out: "o\n", errOut: "e\n", code: 2},
		{cmd: "cat", stdin: "line1\nline2\n", out: "line1\nline2\n"},
		{cmd: "wc -c", stdin: strings.Repeat("x", 1<<20), out: "1048576\n"},
		{cmd: `echo "$FOO $HOME"; pwd`, env: map[string]string{"FOO": "bar baz"}, out: "bar baz " + ts.home + "\n" + ts.home + "\n"},
		{cmd: "kill -9 $$", code: 128 + 9},
	}
	for _, tc := range cases {
		var in io.Reader
		if tc.stdin != "" {
			in = strings.NewReader(tc.stdin)
		}
		out, errOut, code := exec1(t, c, tc.cmd, tc.env, in)
		if strings.TrimSpace(out) != strings.TrimSpace(tc.out) || errOut != tc.errOut || code != tc.code {
			t.Errorf("%q: out %q err %q code %d; want %q %q %d", tc.cmd, out, errOut, code, tc.out, tc.errOut, tc.code)
		}
	}
}

func TestServerConcurrentSessions(t *testing.T) {
	ts := newTestServer(t)
	c, err := ts.connect(t, ts.signer)
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 8)
	for i := range 8 {
		go func() {
			var out bytes.Buffer
			code, err := c.Exec(context.Background(), "echo "+strconv.Itoa(i)+"; exit "+strconv.Itoa(i), nil, nil, &out, nil)
			if err == nil && (code != i || out.String() != strconv.Itoa(i)+"\n") {
				err = errors.New("session " + strconv.Itoa(i) + " got " + out.String() + " code " + strconv.Itoa(code))
			}
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

func TestServerNoShell(t *testing.T) {
	ts := newTestServer(t)
	ts.srv.shell = "/nonexistent/sh"
	c, err := ts.connect(t, ts.signer)
	if err != nil {
		t.Fatal(err)
	}
	_, errOut, code := exec1(t, c, "true", nil, nil)
	if code != 127 || !strings.Contains(errOut, "/nonexistent/sh") || !strings.Contains(errOut, "image") {
		t.Errorf("code %d, stderr %q: want 127 and a message naming the missing shell", code, errOut)
	}
}

func TestServerAuth(t *testing.T) {
	ts := newTestServer(t)
	other := testSigner(t)
	if _, err := ts.connect(t, other); err == nil {
		t.Fatal("a key not in authorized_keys was accepted")
	}
	// authorized_keys is re-read per connection: adding the key lets it in
	// without restarting anything.
	f, _ := os.OpenFile(ts.authKeys, os.O_APPEND|os.O_WRONLY, 0)
	f.Write([]byte("# comment\n"))
	f.Write(ssh.MarshalAuthorizedKey(other.PublicKey()))
	f.Close()
	c, err := ts.connect(t, other)
	if err != nil {
		t.Fatalf("key added to authorized_keys refused: %v", err)
	}
	if out, _, _ := exec1(t, c, "echo in", nil, nil); out != "in\n" {
		t.Errorf("got %q", out)
	}
	os.Remove(ts.authKeys)
	if _, err := ts.connect(t, ts.signer); err == nil {
		t.Fatal("accepted with no authorized_keys file")
	}
}

func TestServerPTY(t *testing.T) {
	ts := newTestServer(t)
	c, err := ts.connect(t, ts.signer)
	if err != nil {
		t.Fatal(err)
	}
	inR, inW := io.Pipe()
	out := &syncBuffer{}
	resize := make(chan agent.TermSize)
	done := make(chan int, 1)
	go func() {
		code, err := c.Shell(context.Background(), "xterm-256color", agent.TermSize{Cols: 80, Rows: 24}, resize, nil, inR, out, nil)
		if err != nil {
			t.Error(err)
		}
		done <- code
	}()
	// waitFor types line until the output shows want (bounded).
	waitFor := func(line, want string) {
		for i := 0; i < 200 && !strings.Contains(out.String(), want); i++ {
			io.WriteString(inW, line+"\n")
			time.Sleep(20 * time.Millisecond)
		}
		if !strings.Contains(out.String(), want) {
			t.Fatalf("no %q in pty output %q", want, out.String())
		}
	}
	waitFor("tty; echo TERM=$TERM", "TERM=xterm-256color")
	if !strings.Contains(out.String(), "/dev/pts/") {
		t.Errorf("tty is not a pty: %q", out.String())
	}
	waitFor("stty size", "24 80")
	resize <- agent.TermSize{Cols: 120, Rows: 40}
	waitFor("stty size", "40 120")
	io.WriteString(inW, "exit 3\n")
	if code := <-done; code != 3 {
		t.Errorf("shell exit status %d, want 3", code)
	}
}

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

func TestServerSFTP(t *testing.T) {
	ts := newTestServer(t)
	c, err := ts.connect(t, ts.signer)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := sftp.NewClient(c.SSH())
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	f, err := sc.Create("relative.txt")
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("payload"))
	f.Close()
	got, err := os.ReadFile(filepath.Join(ts.home, "relative.txt"))
	if err != nil || string(got) != "payload" {
		t.Fatalf("sftp wrote %q, %v; want it in the home directory", got, err)
	}
	// A relative symlink keeps its relative target.
	if err := sc.Symlink("relative.txt", "link"); err != nil {
		t.Fatal(err)
	}
	if target, err := os.Readlink(filepath.Join(ts.home, "link")); err != nil || target != "relative.txt" {
		t.Fatalf("symlink target %q, %v; want relative.txt", target, err)
	}
}

func TestServerPoweroffAndCancel(t *testing.T) {
	ts := newTestServer(t)
	c, err := ts.connect(t, ts.signer)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Poweroff(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := 0; ts.poweroff.Load() == 0 && i < 500; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if ts.poweroff.Load() != 1 {
		t.Fatal("poweroff request did not reach the handler")
	}

	// A cancelled Exec kills the command in the guest.
	pidFile := filepath.Join(ts.home, "pid")
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Exec(ctx, "echo $$ > "+pidFile+"; exec sleep 1000", nil, nil, nil, nil)
		errc <- err
	}()
	var pid int
	for i := 0; pid == 0 && i < 1000; i++ {
		b, _ := os.ReadFile(pidFile)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		time.Sleep(10 * time.Millisecond)
	}
	if pid == 0 {
		t.Fatal("command never started")
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled exec returned %v", err)
	}
	for i := 0; unix.Kill(pid, 0) == nil && i < 1000; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if unix.Kill(pid, 0) == nil {
		t.Fatalf("process %d still running after the exec was cancelled", pid)
	}
}

func TestHostKeyPersists(t *testing.T) {
	p := filepath.Join(t.TempDir(), "etc/banger/ssh_host_ed25519_key")
	a, err := loadOrCreateHostKey(p)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o600 {
		t.Errorf("host key mode %v", st.Mode())
	}
	b, err := loadOrCreateHostKey(p)
	if err != nil || !bytes.Equal(a.PublicKey().Marshal(), b.PublicKey().Marshal()) {
		t.Fatalf("second load gave a different key (%v)", err)
	}
	os.WriteFile(p, []byte("garbage"), 0o600)
	if _, err := loadOrCreateHostKey(p); err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("corrupt key: %v", err)
	}
}

func TestServerSetTime(t *testing.T) {
	ts := newTestServer(t)
	c, err := ts.connect(t, ts.signer)
	if err != nil {
		t.Fatal(err)
	}
	// Without a handler the request is refused.
	if _, err := c.SetTime(context.Background(), time.Now()); err == nil {
		t.Fatal("SetTime accepted with no handler")
	}
	guest := time.Date(2001, 2, 3, 4, 5, 6, 7, time.UTC)
	var got atomic.Int64
	ts.srv.onSetTime = func(t time.Time) (time.Time, error) { got.Store(t.UnixNano()); return guest, nil }
	host := time.Now()
	was, err := c.SetTime(context.Background(), host)
	if err != nil {
		t.Fatal(err)
	}
	if !was.Equal(guest) || got.Load() != host.UnixNano() {
		t.Fatalf("SetTime: guest saw %d (want %d), replied %v (want %v)", got.Load(), host.UnixNano(), was, guest)
	}
	// A malformed payload is refused and never reaches the clock.
	got.Store(0)
	for _, p := range [][]byte{nil, {1, 2, 3}, make([]byte, 8), make([]byte, 16)} {
		if ok, _, err := c.SSH().SendRequest(guestproto.SetTimeRequest, true, p); err != nil || ok {
			t.Errorf("payload %x: ok=%v err=%v, want refused", p, ok, err)
		}
	}
	if got.Load() != 0 {
		t.Fatal("a malformed request reached the clock")
	}
}
