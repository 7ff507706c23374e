// Package daemon is banger's server: it owns the store, the services
// (VMs, images, kernels) and the JSON-RPC endpoint on a unix socket.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"banger/internal/store"
	"banger/internal/vmm"
)

// Version is set at build time (-ldflags -X).
var Version = "dev"

// Daemon is one running banger daemon.
type Daemon struct {
	cfg       Config
	log       *slog.Logger
	store     *store.Store
	handlers  map[string]handlerFunc
	upgraders map[string]upgradeFunc
	inflight  sync.WaitGroup
	lockFile  *os.File

	keys *sshKeys
	// keyUseMu: boots hold it shared from preparing disks to agent-ready;
	// ssh-key rotation holds it exclusively (see rotateKey).
	keyUseMu sync.RWMutex

	vms     *VMService
	kernels *KernelService
	images  *ImageService
	net     *netState

	// drivers are the hypervisors given with WithDrivers; driver is the
	// one cfg.VMM selected (nil when none is usable, driverWhy says why).
	// Set in New, read-only afterwards.
	drivers   []vmm.Driver
	driver    vmm.Driver
	driverWhy string

	// startHook, when set (tests), runs after each start step succeeded
	// and pushed its undo; an error fails the start there.
	startHook func(step string) error
}

// Option configures New.
type Option func(*Daemon)

// WithDrivers gives the daemon its hypervisors, in order of preference for
// `vmm = auto` among equally capable ones. The daemon knows no driver by
// itself: `banger daemon` passes Firecracker and QEMU, tests a test double.
func WithDrivers(drivers ...vmm.Driver) Option {
	return func(d *Daemon) { d.drivers = append([]vmm.Driver(nil), drivers...) }
}

// New prepares a daemon: takes the state-dir lock, opens the store and
// registers the RPC methods. It does not listen yet.
func New(ctx context.Context, cfg Config, logOut io.Writer, opts ...Option) (*Daemon, error) {
	if err := cfg.Finish(); err != nil {
		return nil, err
	}
	d := &Daemon{cfg: cfg, log: newLogger(cfg.LogFormat, logOut), upgraders: map[string]upgradeFunc{}}
	for _, o := range opts {
		o(d)
	}
	if err := d.checkVMMSetting(); err != nil {
		return nil, err
	}
	for _, dir := range []string{cfg.StateDir, cfg.RuntimeDir, filepath.Dir(cfg.Socket)} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("create %s: %w", dir, err)
		}
	}
	if err := d.lockStateDir(); err != nil {
		return nil, err
	}
	st, err := store.Open(ctx, cfg.StateDir)
	if err != nil {
		d.unlockStateDir()
		return nil, err
	}
	d.store = st
	d.keys = &sshKeys{dir: filepath.Join(cfg.StateDir, "ssh")}
	if err := d.keys.load(); err != nil {
		d.Close()
		return nil, fmt.Errorf("daemon SSH key: %w", err)
	}
	d.vms = newVMService(d)
	d.net = newNetState(d)
	if d.kernels, err = newKernelService(d); err != nil {
		d.Close()
		return nil, err
	}
	if d.images, err = newImageService(d); err != nil {
		d.Close()
		return nil, err
	}
	d.selectDriver()
	if err := d.reconcile(ctx); err != nil {
		d.Close()
		return nil, fmt.Errorf("reconcile state: %w", err)
	}
	d.registerMethods()
	return d, nil
}

func newLogger(format string, w io.Writer) *slog.Logger {
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, nil))
	}
	return slog.New(slog.NewTextHandler(w, nil))
}

// lockStateDir takes an exclusive flock so two daemons never share a state
// dir (two writers would each believe they own the same VMs).
func (d *Daemon) lockStateDir() error {
	path := filepath.Join(d.cfg.StateDir, "banger.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b, _ := os.ReadFile(path)
		f.Close()
		return fmt.Errorf("state dir %s is in use by another banger daemon (pid %s): stop it first or pass a different --state-dir", d.cfg.StateDir, string(trimSpace(b)))
	}
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	d.lockFile = f
	return nil
}

func (d *Daemon) unlockStateDir() {
	if d.lockFile != nil {
		d.lockFile.Close()
		d.lockFile = nil
	}
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}

// listen opens the unix socket, refusing to steal one a live daemon serves.
func (d *Daemon) listen() (net.Listener, error) {
	sock := d.cfg.Socket
	if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("another banger daemon is already listening on %s", sock)
	}
	os.Remove(sock) // stale socket from a killed daemon
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", sock, err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(true)
	os.Chmod(sock, 0o660)
	if g, err := user.LookupGroup("banger"); err == nil {
		if gid, err := strconv.Atoi(g.Gid); err == nil {
			os.Chown(sock, 0, gid)
		}
	}
	return ln, nil
}

// Serve listens and serves until ctx ends (SIGTERM in `banger daemon`).
// In-flight calls get a grace period to finish, then are cancelled.
func (d *Daemon) Serve(ctx context.Context) error {
	ln, err := d.listen()
	if err != nil {
		d.Close()
		return err
	}
	d.log.Info("daemon started", "version", Version, "pid", os.Getpid(), "socket", d.cfg.Socket, "state_dir", d.cfg.StateDir)
	d.startBackground(ctx)

	callCtx, cancelCalls := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelCalls()
	var conns sync.WaitGroup
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if errors.Is(err, net.ErrClosed) {
				break
			}
			d.log.Warn("accept", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		conns.Add(1)
		go func() {
			defer conns.Done()
			d.serveConn(callCtx, conn)
		}()
	}
	d.log.Info("shutting down: waiting for in-flight calls")
	done := make(chan struct{})
	go func() { d.inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		d.log.Warn("in-flight calls still running after 10s: cancelling them")
		cancelCalls()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			d.log.Error("in-flight calls ignored cancellation; exiting anyway")
		}
	}
	d.Close()
	d.log.Info("daemon stopped")
	return nil
}

// Close releases the store and the state-dir lock.
func (d *Daemon) Close() {
	if d.net != nil {
		d.net.close()
	}
	if d.store != nil {
		d.store.Close()
		d.store = nil
	}
	d.unlockStateDir()
}

// startBackground starts the daemon's loops; each ends with ctx.
func (d *Daemon) startBackground(ctx context.Context) {
	// None yet: VM deaths are noticed per VM (monitor), not by polling.
}

// reconcile brings the store in line with the disk and the running
// processes after a crash or restart.
func (d *Daemon) reconcile(ctx context.Context) error {
	if err := d.kernels.reconcile(ctx); err != nil {
		return err
	}
	if err := d.images.reconcile(ctx); err != nil {
		return err
	}
	return d.vms.reconcile(ctx)
}
