// Package agent is the host side of the guest agent: an SSH client over a
// stream the VMM driver already connected (a virtio-serial unix socket, a
// vsock or Firecracker hybrid-vsock connection). banger-init is the server.
//
// A serial channel is one byte stream, so the daemon must hold at most one
// Client per VM and share it: SSH multiplexes any number of Exec, Shell and
// SFTP sessions over it.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/crypto/ssh"

	"banger/internal/guestproto"
)

// User is the SSH user the agent logs in as; banger-init runs everything as
// root whatever the name, this only keeps logs honest.
const User = "root"

// Client is an SSH connection to banger-init.
type Client struct {
	ssh *ssh.Client
}

// Dial connects to banger-init over conn, a freshly connected agent stream
// of any transport (the virtio-serial unix socket, a vsock connection, a
// Firecracker hybrid vsock after CONNECT/OK): it resynchronizes the stream
// (guestproto.AgentSync) and runs the SSH handshake, authenticating with
// signer and checking the guest's host key with hostKey (see TOFU). It
// waits for a guest that is still booting until ctx ends; conn is closed on
// any error.
func Dial(ctx context.Context, conn net.Conn, signer ssh.Signer, hostKey ssh.HostKeyCallback) (*Client, error) {
	if hostKey == nil {
		conn.Close()
		return nil, errors.New("agent: a host key callback is required (use agent.TOFU with the VM's known_hosts file)")
	}
	if err := syncStream(ctx, conn); err != nil {
		conn.Close()
		return nil, err
	}
	return DialSSH(ctx, conn, signer, hostKey)
}

// guestCiphers puts ChaCha20-Poly1305 first (OpenSSH's own default): a
// TCG guest emulates AES-NI and carry-less multiply slowly, so AES-GCM
// (Go's default first choice) made `vm cp` several times slower than scp
// through the same proxy (measured: 0.6 vs 4.3 MiB/s). The rest keep
// Go's order.
var guestCiphers = []string{
	ssh.CipherChaCha20Poly1305, ssh.CipherAES128GCM, ssh.CipherAES256GCM,
	ssh.CipherAES128CTR, ssh.CipherAES192CTR, ssh.CipherAES256CTR,
}

// DialSSH is Dial without the agent-stream resync: for a stream that
// reaches the guest's plain SSH server (TCP :22, e.g. through the daemon's
// vm.proxy), where there are no stale bytes to drop.
func DialSSH(ctx context.Context, conn net.Conn, signer ssh.Signer, hostKey ssh.HostKeyCallback) (*Client, error) {
	if hostKey == nil {
		conn.Close()
		return nil, errors.New("agent: a host key callback is required (use agent.TOFU with the VM's known_hosts file)")
	}
	cfg := &ssh.ClientConfig{
		Config:          ssh.Config{Ciphers: guestCiphers},
		User:            User,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: hostKey,
	}
	// ssh.NewClientConn has no context: a deadline bounds a silent peer and
	// a watcher closes the stream when ctx is cancelled.
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl) // not every stream supports deadlines; the watcher covers those
	}
	const addr = "banger-agent"
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	cancelled := !stop()
	if err != nil || cancelled {
		conn.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("agent handshake: %w", ctx.Err())
		}
		if errors.Is(err, os.ErrDeadlineExceeded) { // the conn deadline (ctx's) fired first
			return nil, fmt.Errorf("agent handshake: %w", context.DeadlineExceeded)
		}
		return nil, fmt.Errorf("agent handshake: %w", err)
	}
	conn.SetDeadline(time.Time{})
	return &Client{ssh: ssh.NewClient(c, chans, reqs)}, nil
}

// SSH returns the underlying client, e.g. for sftp.NewClient.
func (c *Client) SSH() *ssh.Client { return c.ssh }

// Close ends the connection and every session on it.
func (c *Client) Close() error { return c.ssh.Close() }

// Wait blocks until the connection ends (the guest powered off, the stream
// broke) and returns why.
func (c *Client) Wait() error { return c.ssh.Wait() }

// Ping checks that banger-init answers, without running anything in the
// guest: the readiness probe.
func (c *Client) Ping(ctx context.Context) error {
	return c.global(ctx, guestproto.PingRequest)
}

// Poweroff asks banger-init to stop every process, sync, unmount the disks
// and power the VM off. It returns once the guest has accepted; wait for the
// VMM process to exit to know it is done.
func (c *Client) Poweroff(ctx context.Context) error {
	return c.global(ctx, guestproto.PoweroffRequest)
}

// SetTime sets the guest's wall clock to t and returns what the guest's
// clock read when the request arrived, so the caller can see the drift.
func (c *Client) SetTime(ctx context.Context, t time.Time) (time.Time, error) {
	reply, err := c.globalPayload(ctx, guestproto.SetTimeRequest, guestproto.EncodeTime(t))
	if err != nil {
		return time.Time{}, err
	}
	was, err := guestproto.DecodeTime(reply)
	if err != nil {
		return time.Time{}, fmt.Errorf("agent %s: reply: %w", guestproto.SetTimeRequest, err)
	}
	return was, nil
}

// Identity gives a guest restored from a snapshot its own identity
// (guestproto.IdentityRequest) and returns its new host key.
func (c *Client) Identity(ctx context.Context, id guestproto.Identity) (guestproto.IdentityReply, error) {
	if err := id.Validate(); err != nil {
		return guestproto.IdentityReply{}, err
	}
	b, err := json.Marshal(id)
	if err != nil {
		return guestproto.IdentityReply{}, err
	}
	reply, err := c.globalPayload(ctx, guestproto.IdentityRequest, b)
	if err != nil {
		return guestproto.IdentityReply{}, err
	}
	return guestproto.DecodeIdentityReply(reply)
}

func (c *Client) global(ctx context.Context, name string) error {
	_, err := c.globalPayload(ctx, name, nil)
	return err
}

func (c *Client) globalPayload(ctx context.Context, name string, payload []byte) ([]byte, error) {
	type result struct {
		ok    bool
		reply []byte
		err   error
	}
	res := make(chan result, 1)
	go func() {
		ok, reply, err := c.ssh.SendRequest(name, true, payload)
		res <- result{ok, reply, err}
	}()
	select {
	case r := <-res:
		if r.err != nil {
			return nil, fmt.Errorf("agent %s: %w", name, r.err)
		}
		if !r.ok {
			return nil, fmt.Errorf("agent %s: refused by the guest (banger-init too old?)", name)
		}
		return r.reply, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("agent %s: %w", name, ctx.Err())
	}
}

// Exec runs cmd with the guest's /bin/sh -c, with env added to the
// environment, stdin copied to it (nil for none) and its output copied to
// stdout and stderr (nil discards). It returns the command's exit status
// (128+N when killed by signal N). err is set only when the command's status
// could not be learned: the connection broke, or ctx ended, in which case the
// command is sent SIGKILL.
func (c *Client) Exec(ctx context.Context, cmd string, env map[string]string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	s, err := c.ssh.NewSession()
	if err != nil {
		return -1, fmt.Errorf("agent exec: open session: %w", err)
	}
	defer s.Close()
	if err := setenv(s, env); err != nil {
		return -1, err
	}
	s.Stdout, s.Stderr = stdout, stderr
	if err := pumpStdin(s, stdin); err != nil {
		return -1, err
	}
	if err := s.Start(cmd); err != nil {
		return -1, fmt.Errorf("agent exec %q: %w", cmd, err)
	}
	return wait(ctx, s, cmd)
}

// TermSize is a terminal's size in character cells.
type TermSize struct {
	Cols, Rows int
}

// Shell starts root's login shell on a pty of the given terminal type and
// size, and returns its exit status. Each value received from resize is
// sent as a window change. Putting the local terminal in raw mode is the
// caller's job.
func (c *Client) Shell(ctx context.Context, term string, size TermSize, resize <-chan TermSize, env map[string]string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	return c.pty(ctx, "", term, size, resize, env, stdin, stdout, stderr)
}

// ExecPTY is Exec on a pty, for interactive commands (`vm exec -t`).
func (c *Client) ExecPTY(ctx context.Context, cmd, term string, size TermSize, resize <-chan TermSize, env map[string]string, stdin io.Reader, stdout io.Writer) (int, error) {
	if cmd == "" {
		return -1, errors.New("agent exec: empty command")
	}
	return c.pty(ctx, cmd, term, size, resize, env, stdin, stdout, nil)
}

func (c *Client) pty(ctx context.Context, cmd, term string, size TermSize, resize <-chan TermSize, env map[string]string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	s, err := c.ssh.NewSession()
	if err != nil {
		return -1, fmt.Errorf("agent shell: open session: %w", err)
	}
	defer s.Close()
	if err := setenv(s, env); err != nil {
		return -1, err
	}
	if term == "" {
		term = "xterm"
	}
	if err := s.RequestPty(term, size.Rows, size.Cols, ssh.TerminalModes{}); err != nil {
		return -1, fmt.Errorf("agent shell: request pty: %w", err)
	}
	s.Stdout, s.Stderr = stdout, stderr
	if err := pumpStdin(s, stdin); err != nil {
		return -1, err
	}
	if cmd == "" {
		err = s.Shell()
	} else {
		err = s.Start(cmd)
	}
	if err != nil {
		return -1, fmt.Errorf("agent shell: %w", err)
	}
	done := make(chan struct{})
	defer close(done)
	if resize != nil {
		go func() {
			for {
				select {
				case sz, ok := <-resize:
					if !ok {
						return
					}
					s.WindowChange(sz.Rows, sz.Cols)
				case <-done:
					return
				}
			}
		}()
	}
	return wait(ctx, s, cmd)
}

func setenv(s *ssh.Session, env map[string]string) error {
	for k, v := range env {
		if err := s.Setenv(k, v); err != nil {
			return fmt.Errorf("agent: set %s in the guest environment: %w", k, err)
		}
	}
	return nil
}

func wait(ctx context.Context, s *ssh.Session, cmd string) (int, error) {
	errc := make(chan error, 1)
	go func() { errc <- s.Wait() }()
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		s.Signal(ssh.SIGKILL)
		s.Close()
		return -1, fmt.Errorf("agent exec %q: %w", cmd, ctx.Err())
	}
	if err == nil {
		return 0, nil
	}
	var ee *ssh.ExitError
	if errors.As(err, &ee) {
		return ee.ExitStatus(), nil
	}
	return -1, fmt.Errorf("agent exec %q: %w", cmd, err)
}

// pumpStdin copies stdin to the session in a goroutine of our own. Setting
// Session.Stdin instead would make Wait block until stdin hits EOF, so a
// command that exits without reading a terminal's stdin would hang.
func pumpStdin(s *ssh.Session, stdin io.Reader) error {
	if stdin == nil {
		return nil
	}
	w, err := s.StdinPipe()
	if err != nil {
		return fmt.Errorf("agent: stdin: %w", err)
	}
	go func() {
		io.Copy(w, stdin)
		w.Close()
	}()
	return nil
}
