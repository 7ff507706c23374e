package client

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"banger/api"
	"banger/internal/agent"
	"banger/internal/guestcp"
	"banger/internal/guestproto"
	"banger/internal/shellquote"
)

// Guest is an SSH session to a VM's banger-init, through the daemon
// (vm.proxy), as the caller: the daemon authorizes the client's key in the
// VM and hands over the VM's host keys, which the session checks. One
// Guest carries any number of Exec, Shell and copy calls, one after
// another or at once. Close it when done.
type Guest struct {
	name string
	c    *agent.Client
	sc   *sftp.Client
}

// TermSize is a terminal's size in character cells (ExecPTY, Shell).
type TermSize = agent.TermSize

// CopyOptions shape CopyIn and CopyOut: Recursive (directories), Archive
// (modes with special bits, times, owners), Progress (bytes copied since
// its last call), Planned (the total, before the first byte), Workers
// (files at once, default 16).
type CopyOptions = guestcp.Options

// ExecOptions are one command's environment and stdio.
type ExecOptions struct {
	// Env is added to the VM's env (image Env and the create's Env).
	Env map[string]string
	// WorkingDir (absolute) and User (USER[:GROUP], looked up in the
	// guest) default to /root and root.
	WorkingDir string
	User       string
	// Stdin is copied to the command (nil: none, it reads EOF); Stdout and
	// Stderr receive its output (nil discards).
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

func (o ExecOptions) env() map[string]string {
	if len(o.Env) == 0 && o.WorkingDir == "" && o.User == "" {
		return nil
	}
	m := make(map[string]string, len(o.Env)+2)
	for k, v := range o.Env {
		m[k] = v
	}
	if o.WorkingDir != "" {
		m[guestproto.EnvWorkdir] = o.WorkingDir
	}
	if o.User != "" {
		m[guestproto.EnvUser] = o.User
	}
	return m
}

// Guest opens an SSH session to the running VM name. The first one for a
// VM makes the daemon authorize the client's key there (see WithSSHKey).
func (c *Client) Guest(ctx context.Context, name string) (*Guest, error) {
	acc, err := c.GuestAccess(ctx, name)
	if err != nil {
		return nil, err
	}
	conn, err := c.Proxy(ctx, name)
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	info := acc.Info
	ac, err := agent.DialSSH(dctx, conn, acc.Signer, agent.TOFU(acc.KnownHosts, info.Name, info.GuestIP, info.Name+".vm"))
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("SSH to %s: %w", name, err)
	}
	return &Guest{name: name, c: ac}, nil
}

// Exec runs argv in the running VM name with streamed stdio and returns
// its exit status (128+N when killed by signal N). It is Guest, Exec and
// Close in one.
func (c *Client) Exec(ctx context.Context, name string, argv []string, o ExecOptions) (int, error) {
	g, err := c.Guest(ctx, name)
	if err != nil {
		return -1, err
	}
	defer g.Close()
	return g.Exec(ctx, argv, o)
}

// CopyIn copies host paths into the VM under guestDst (Guest and CopyIn in
// one).
func (c *Client) CopyIn(ctx context.Context, name string, hostSrcs []string, guestDst string, o CopyOptions) error {
	g, err := c.Guest(ctx, name)
	if err != nil {
		return err
	}
	defer g.Close()
	return g.CopyIn(ctx, hostSrcs, guestDst, o)
}

// CopyOut copies guest paths of the VM to hostDst (Guest and CopyOut in
// one).
func (c *Client) CopyOut(ctx context.Context, name string, guestSrcs []string, hostDst string, o CopyOptions) error {
	g, err := c.Guest(ctx, name)
	if err != nil {
		return err
	}
	defer g.Close()
	return g.CopyOut(ctx, guestSrcs, hostDst, o)
}

// Name is the VM the session reaches.
func (g *Guest) Name() string { return g.name }

// SSH is the SSH connection, for what this type does not cover (port
// forwards, your own sessions).
func (g *Guest) SSH() *ssh.Client { return g.c.SSH() }

// Close ends the session.
func (g *Guest) Close() error {
	if g.sc != nil {
		g.sc.Close()
	}
	return g.c.Close()
}

// Exec runs argv with the guest's /bin/sh -c: several words are quoted
// for it, a single one is taken as a shell command line ("ls | wc -l").
// It returns the exit status; err is set only when the status could not
// be learned (the connection broke, or ctx ended, in which case the
// command is sent SIGKILL).
func (g *Guest) Exec(ctx context.Context, argv []string, o ExecOptions) (int, error) {
	if len(argv) == 0 {
		return -1, api.Errorf(api.KindInvalidArgument, "exec in %s: no command given", g.name)
	}
	return g.c.Exec(ctx, shellquote.Join(argv), o.env(), o.Stdin, o.Stdout, o.Stderr)
}

// ExecPTY is Exec on a pty of terminal type term and size (stdout carries
// the pty's output, o.Stderr is unused). Each value from resize is sent
// as a window change. Putting the local terminal in raw mode is the
// caller's job.
func (g *Guest) ExecPTY(ctx context.Context, argv []string, term string, size TermSize, resize <-chan TermSize, o ExecOptions) (int, error) {
	if len(argv) == 0 {
		return -1, api.Errorf(api.KindInvalidArgument, "exec in %s: no command given", g.name)
	}
	return g.c.ExecPTY(ctx, shellquote.Join(argv), term, size, resize, o.env(), o.Stdin, o.Stdout)
}

// Shell runs root's login shell on a pty (as ExecPTY).
func (g *Guest) Shell(ctx context.Context, term string, size TermSize, resize <-chan TermSize, o ExecOptions) (int, error) {
	return g.c.Shell(ctx, term, size, resize, o.env(), o.Stdin, o.Stdout, o.Stderr)
}

// SFTP is the session's SFTP client (opened on first use, closed with the
// Guest), tuned for bulk copies.
func (g *Guest) SFTP() (*sftp.Client, error) {
	if g.sc != nil {
		return g.sc, nil
	}
	sc, err := guestcp.NewClient(g.c.SSH())
	if err != nil {
		return nil, fmt.Errorf("sftp to %s: %w", g.name, err)
	}
	g.sc = sc
	return sc, nil
}

// CopyIn copies host files (directories with o.Recursive) into the guest,
// as `banger vm cp SRC... VM:DST` does: into guestDst when it is a
// directory (or one source ends in /), else to guestDst. Host sources are
// all checked before anything is written.
func (g *Guest) CopyIn(ctx context.Context, hostSrcs []string, guestDst string, o CopyOptions) error {
	if len(hostSrcs) == 0 {
		return api.Errorf(api.KindInvalidArgument, "copy into %s: no source given", g.name)
	}
	if _, err := guestcp.PlanLocal(hostSrcs, o); err != nil {
		return err
	}
	sc, err := g.SFTP()
	if err != nil {
		return err
	}
	p, err := guestcp.PlanUpload(sc, g.name, hostSrcs, guestDst, o)
	if err != nil {
		return err
	}
	if o.Planned != nil {
		o.Planned(p.Bytes)
	}
	return p.Run(ctx, o.Progress)
}

// CopyOut copies guest files (directories with o.Recursive) to the host,
// as `banger vm cp VM:SRC... DST` does.
func (g *Guest) CopyOut(ctx context.Context, guestSrcs []string, hostDst string, o CopyOptions) error {
	if len(guestSrcs) == 0 {
		return api.Errorf(api.KindInvalidArgument, "copy from %s: no source given", g.name)
	}
	sc, err := g.SFTP()
	if err != nil {
		return err
	}
	p, err := guestcp.PlanDownload(sc, g.name, guestSrcs, hostDst, o)
	if err != nil {
		return err
	}
	if o.Planned != nil {
		o.Planned(p.Bytes)
	}
	return p.Run(ctx, o.Progress)
}

// WriteTar writes guest paths as a tar stream to w (`vm cp VM:SRC -`).
func (g *Guest) WriteTar(ctx context.Context, guestSrcs []string, w io.Writer, o CopyOptions) error {
	sc, err := g.SFTP()
	if err != nil {
		return err
	}
	return guestcp.WriteTar(ctx, sc, g.name, guestSrcs, w, o)
}

// ExtractTar extracts a tar stream into the guest directory dir (`vm cp -
// VM:DIR`); skipped names entries that are not files, directories or
// links.
func (g *Guest) ExtractTar(ctx context.Context, r io.Reader, dir string, o CopyOptions) (skipped []string, err error) {
	sc, err := g.SFTP()
	if err != nil {
		return nil, err
	}
	return guestcp.ExtractTar(ctx, sc, g.name, r, dir, o)
}
