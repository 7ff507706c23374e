// Package client is banger's Go SDK: a typed method for every RPC the
// daemon serves, plus the guest side the CLI uses (exec with streams, file
// copies over SFTP, shells), over the daemon's unix socket.
//
// The wire types (params, results, errors) are in package banger/api.
// Errors from the daemon are *api.Error; branch on their kind with
// api.IsKind (api.KindNotFound, api.KindAlreadyExists, ...).
//
// A Client speaks ProtocolVersion. Connect checks that the daemon speaks
// it too and fails with a *VersionError saying which side to upgrade when
// it does not; New skips the check (one round trip fewer), so a mismatch
// then shows as a method or params error.
//
//	c, err := client.Connect(ctx, api.SocketFromEnv())
//	vm, err := c.CreateVM(ctx, api.VMCreateParams{Name: "dev"}, nil)
//	code, err := c.Exec(ctx, "dev", []string{"uname", "-a"}, client.ExecOptions{Stdout: os.Stdout})
//	_, err = c.RemoveVM(ctx, api.VMDeleteParams{Name: "dev", Force: true})
package client

import (
	"context"
	"fmt"

	"banger/api"
)

// ProtocolVersion is the RPC protocol version this package speaks; it is
// api.ProtocolVersion of the same source tree.
const ProtocolVersion = api.ProtocolVersion

// Client calls one daemon. Every call opens its own connection, so a Client
// is safe for concurrent use and a slow call never blocks another.
type Client struct {
	rpc     *api.Client
	keyPath string
	cache   string
}

// Option configures a Client.
type Option func(*Client)

// WithProgress sends the progress notifications of every call (create,
// pulls, imports) to fn, unless the call was given its own.
func WithProgress(fn func(api.Progress)) Option {
	return func(c *Client) { c.rpc.OnProgress = fn }
}

// WithSSHKey makes guest sessions (Exec, Guest, copies) use the OpenSSH
// ed25519 private key at path, created there (0600) if absent. The default
// is the CLI's: $XDG_CONFIG_HOME/banger/id_ed25519. The daemon authorizes
// its public half in the VM on first use.
func WithSSHKey(path string) Option {
	return func(c *Client) { c.keyPath = path }
}

// WithKnownHostsDir keeps the guests' host keys (as the daemon recorded
// them) in dir instead of $XDG_CACHE_HOME/banger/known_hosts.
func WithKnownHostsDir(dir string) Option {
	return func(c *Client) { c.cache = dir }
}

// New returns a client for the daemon listening on socket (see
// api.SocketFromEnv). It does not connect.
func New(socket string, opts ...Option) *Client {
	c := &Client{rpc: api.NewClient(socket)}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Connect is New followed by CheckVersion.
func Connect(ctx context.Context, socket string, opts ...Option) (*Client, error) {
	c := New(socket, opts...)
	if _, err := c.CheckVersion(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// Socket is the daemon socket path the client calls.
func (c *Client) Socket() string { return c.rpc.Socket }

// RPC is the untyped JSON-RPC client underneath, for a method this
// package does not know yet.
func (c *Client) RPC() *api.Client { return c.rpc }

// VersionError says the daemon speaks another protocol version.
type VersionError struct {
	Client, Daemon int
	DaemonVersion  string // the daemon's build version
}

func (e *VersionError) Error() string {
	side := "the daemon"
	if e.Daemon > e.Client {
		side = "this client (rebuild it against the daemon's banger/client)"
	}
	return fmt.Sprintf("banger daemon %s speaks RPC protocol %d, this client speaks %d: upgrade %s so both match",
		e.DaemonVersion, e.Daemon, e.Client, side)
}

// CheckVersion pings the daemon and returns a *VersionError when its
// protocol version is not ProtocolVersion.
func (c *Client) CheckVersion(ctx context.Context) (api.PingResult, error) {
	p, err := c.Ping(ctx)
	if err != nil {
		return p, err
	}
	if p.Protocol != ProtocolVersion {
		return p, &VersionError{Client: ProtocolVersion, Daemon: p.Protocol, DaemonVersion: p.Version}
	}
	return p, nil
}

// call is a typed RPC: params in, R out.
func call[R any](ctx context.Context, c *Client, method string, params any) (R, error) {
	var out R
	err := c.rpc.Call(ctx, method, params, &out)
	return out, err
}

// callProgress is call with this call's progress going to progress (the
// client's WithProgress function when nil).
func callProgress[R any](ctx context.Context, c *Client, method string, params any, progress func(api.Progress)) (R, error) {
	if progress == nil {
		progress = c.rpc.OnProgress
	}
	var out R
	err := c.rpc.CallWithProgress(ctx, method, params, &out, progress)
	return out, err
}
