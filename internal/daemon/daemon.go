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

	"banger/internal/instance"
	"banger/internal/store"
	"banger/internal/vmm"
)

// Version is set at build time (-ldflags -X).
var Version = "dev"

// Daemon is one running banger daemon.
type Daemon struct {
	cfg       Config
	names     instance.Names // this instance's taps, tables, VM runtime dir
	log       *slog.Logger
	store     *store.Store
	handlers  map[string]handlerFunc
	upgraders map[string]upgradeFunc
	sigs      map[string]MethodSig // the method table (Methods)
	inflight  sync.WaitGroup
	lockFiles []*os.File // state-dir and runtime-dir flocks, held for the daemon's life

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

	// events fans VM, image and kernel events out to `banger events`.
	events eventBus

	// startHook, when set (tests), runs after each start step succeeded
	// and pushed its undo; an error fails the start there.
	startHook func(step string) error

	// bg ends when the daemon closes. The VM monitors wait on it: a closed
	// daemon stops watching its VMMs (they keep running, and the next
	// daemon adopts them) instead of recording their exit in a store it
	// no longer owns. monitors counts the running monitors; Close waits
	// for them before it closes the store.
	bg       context.Context
	stopBG   context.CancelFunc
	monitors sync.WaitGroup
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
	d := &Daemon{cfg: cfg, names: instance.For(cfg.StateDir), log: newLogger(cfg.LogFormat, logOut), upgraders: map[string]upgradeFunc{}}
	d.bg, d.stopBG = context.WithCancel(context.Background())
	for _, o := range opts {
		o(d)
	}
	if err := d.checkVMMSetting(); err != nil {
		return nil, err
	}
	if err := prepareDirs(cfg); err != nil {
		return nil, err
	}
	if err := d.lockDirs(); err != nil {
		return nil, err
	}
	if err := d.vmDirsWithoutStore(cfg.Reset, cfg.Adopt); err != nil {
		d.unlockDirs()
		return nil, err
	}
	st, err := store.Open(ctx, cfg.StateDir)
	if err != nil {
		d.unlockDirs()
		return nil, err
	}
	d.store = st
	if err := d.freshStoreBesideVMs(ctx); err != nil {
		d.Close()
		return nil, err
	}
	if err := d.adoptVMDirs(ctx); err != nil {
		d.Close()
		return nil, err
	}
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

// prepareDirs creates the daemon's directories with their modes.
func prepareDirs(cfg Config) error {
	// The state dir is private (layers from private registries, work
	// disks, keys): 0700, also when an older version made it 0755. The
	// runtime dir stays traversable: group members reach the daemon only
	// through the socket (0660 root:banger). Only directories we create
	// get a mode, and the state dir's is tightened unless it is a shared
	// sticky directory such as /tmp (never chmod what is not ours).
	for _, dir := range []struct {
		path    string
		mode    os.FileMode
		tighten bool
	}{{cfg.StateDir, 0o700, true}, {cfg.RuntimeDir, 0o755, false}, {filepath.Dir(cfg.Socket), 0o755, false}} {
		fi, err := os.Stat(dir.path)
		if err != nil {
			if err := os.MkdirAll(dir.path, dir.mode); err != nil {
				return fmt.Errorf("create %s: %w", dir.path, err)
			}
		} else if !dir.tighten || fi.Mode()&os.ModeSticky != 0 || !fi.IsDir() {
			continue
		}
		if err := os.Chmod(dir.path, dir.mode); err != nil {
			return fmt.Errorf("chmod %s: %w", dir.path, err)
		}
	}
	return nil
}

func newLogger(format string, w io.Writer) *slog.Logger {
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, nil))
	}
	return slog.New(slog.NewTextHandler(w, nil))
}

// lockDirs takes an exclusive flock on the state dir, then on the runtime
// dir, and checks that no daemon serves the socket — all before anything
// is cleaned up, so a second daemon (started by mistake, even on another
// state dir) exits without touching the first one's taps, VMMs or sockets.
func (d *Daemon) lockDirs() error {
	for _, dir := range []struct{ path, what, flag string }{
		{d.cfg.StateDir, "state dir", "--state-dir"},
		{d.cfg.RuntimeDir, "runtime dir", "--runtime-dir"},
	} {
		f, err := lockDir(dir.path)
		if err != nil {
			d.unlockDirs()
			return fmt.Errorf("%s %s is in use by another banger daemon%s: stop it first or pass a different %s", dir.what, dir.path, err, dir.flag)
		}
		d.lockFiles = append(d.lockFiles, f)
	}
	if c, err := net.DialTimeout("unix", d.cfg.Socket, time.Second); err == nil {
		c.Close()
		d.unlockDirs()
		return fmt.Errorf("another banger daemon is already listening on %s: nothing was cleaned up; stop it first or pass a different --socket", d.cfg.Socket)
	}
	return nil
}

// lockDir flocks dir/banger.lock and writes our pid into it. The error
// text (" (pid N)") names the holder, for lockDirs' message.
func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, "banger.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf(" (open %s: %v)", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b, _ := os.ReadFile(path)
		f.Close()
		return nil, fmt.Errorf(" (pid %s)", string(trimSpace(b)))
	}
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return f, nil
}

func (d *Daemon) unlockDirs() {
	for _, f := range d.lockFiles {
		f.Close()
	}
	d.lockFiles = nil
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
	d.vms.startReaper()
	d.vms.startIdleStopper()

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

// Close stops watching the VMs (they keep running: the next daemon adopts
// them), closes their agent connections (a serial agent channel takes one
// client at a time, so an open one would lock the next daemon out), and
// releases the network services, the store and the state-dir lock. Safe to
// call twice.
func (d *Daemon) Close() {
	d.stopBG()
	d.monitors.Wait()
	if d.vms != nil {
		d.vms.closeAgents()
	}
	if d.net != nil {
		d.net.close()
	}
	if d.store != nil {
		d.store.Close()
		d.store = nil
	}
	d.unlockDirs()
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
