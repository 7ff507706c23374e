// Package firecracker runs VMs with Firecracker through a thin client over
// its API socket. Firecracker needs a working /dev/kvm and boots an ELF
// vmlinux (Spec.Vmlinux); its serial console is its stdout, a FIFO the
// driver copies into the capped console log (vmm.ConsoleLog). The agent
// channel is Firecracker's hybrid vsock. Where the jailer binary exists,
// Firecracker runs under it (jail.go).
package firecracker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"banger/internal/vmm"
)

// Name is the driver name, as in config `vmm = firecracker`.
const Name = "firecracker"

// Defaults for Options.
const (
	DefaultBinary      = "firecracker"
	DefaultStopTimeout = 20 * time.Second
)

// File and socket names in Spec.RuntimeDir and Spec.Dir.
const (
	APISocket   = "fc.sock"
	VsockSocket = "v.sock"
	LogFile     = "firecracker.log" // Firecracker's logger, in Spec.Dir
	MetricsFile = "metrics.json"
	StderrFile  = "vmm.log" // Firecracker's stderr
)

// Options tune the driver; the zero value is fine.
type Options struct {
	Binary      string        // default DefaultBinary, looked up on PATH
	StopTimeout time.Duration // how long Stop waits after SendCtrlAltDel
	// Jailer is the jailer binary, default DefaultJailer, looked up on
	// PATH at each start: found, Firecracker runs under it as
	// JailUID:JailGID. "none" never jails.
	Jailer           string
	JailUID, JailGID int
	// ConsoleMaxBytes caps each of the two console log generations
	// (default vmm.ConsoleMaxBytes).
	ConsoleMaxBytes int64
}

// Driver is the Firecracker driver.
type Driver struct {
	opt Options
	// kvm checks hardware virtualization; tests replace it to drive a
	// stand-in binary on hosts without KVM.
	kvm func() (bool, string)

	probeOnce sync.Once
	probe     vmm.ProbeResult
}

var _ vmm.Driver = (*Driver)(nil)

// New returns a driver with o's settings.
func New(o Options) *Driver {
	if o.Binary == "" {
		o.Binary = DefaultBinary
	}
	if o.StopTimeout == 0 {
		o.StopTimeout = DefaultStopTimeout
	}
	if o.Jailer == "" {
		o.Jailer = DefaultJailer
	}
	return &Driver{opt: o, kvm: vmm.KVM}
}

// Name returns "firecracker".
func (d *Driver) Name() string { return Name }

// AgentMode is always vsock (hybrid, over a unix socket).
func (d *Driver) AgentMode() string { return vmm.AgentVsock }

// Probe wants a usable /dev/kvm and the firecracker binary on PATH. The
// result is computed once per Driver.
func (d *Driver) Probe() vmm.ProbeResult {
	d.probeOnce.Do(func() {
		var why []string
		if ok, r := d.kvm(); !ok {
			why = append(why, r)
		}
		if _, err := exec.LookPath(d.opt.Binary); err != nil {
			why = append(why, d.opt.Binary+" binary not found")
		}
		if len(why) > 0 {
			d.probe = vmm.ProbeResult{Reason: joinReasons(why)}
			return
		}
		d.probe = vmm.ProbeResult{Usable: true, Accel: "kvm", Reason: "kvm and " + d.opt.Binary + " found"}
	})
	return d.probe
}

func joinReasons(r []string) string {
	s := r[0]
	for _, x := range r[1:] {
		s += "; " + x
	}
	return s
}

// paths are one VM's files and sockets.
type paths struct{ api, vsock, log, metrics, console, stderr string }

func pathsFor(s vmm.Spec) paths {
	return paths{
		api:     filepath.Join(s.RuntimeDir, APISocket),
		vsock:   filepath.Join(s.RuntimeDir, VsockSocket),
		log:     filepath.Join(s.Dir, LogFile),
		metrics: filepath.Join(s.Dir, MetricsFile),
		console: s.Console(),
		stderr:  filepath.Join(s.Dir, StderrFile),
	}
}

// BootArgs is the guest command line: serial console, reboot via the
// keyboard controller (Firecracker exits on it), panic reboots at once,
// no PCI probing, then the daemon's banger.* arguments.
func BootArgs(s vmm.Spec) string {
	a := "console=ttyS0 reboot=k panic=1 pci=off quiet"
	if s.Cmdline != "" {
		a += " " + s.Cmdline
	}
	return a
}

// put is one API request.
type put struct {
	path string
	body any
}

// Configure sends the whole pre-boot configuration for s and starts the
// instance. It is separate from the process spawn so contract tests can run
// it against a stand-in API server. Order: logger and metrics first (so
// later errors are logged), machine, boot source, drives, network, vsock,
// then InstanceStart.
func Configure(ctx context.Context, c *Client, s vmm.Spec) error {
	return configure(ctx, c, s, true)
}

// errJailedSnapshot: the snapshot paths are host paths, outside a jail.
var errJailedSnapshot = errors.New("firecracker snapshots under the jailer are not supported yet (banger uses the jailer when it is on PATH): snapshot and fork on the QEMU driver, or run Firecracker without its jailer")

// configure is Configure; links: the drives as links in the runtime dir
// (driveLink), which a snapshot records; without (jailed), the drives'
// paths inside the jail.
func configure(ctx context.Context, c *Client, s vmm.Spec, links bool) error {
	p := pathsFor(s)
	puts := []put{
		{"/logger", Logger{LogPath: p.log, Level: "Info", ShowLevel: true}},
		{"/metrics", Metrics{MetricsPath: p.metrics}},
		{"/machine-config", MachineConfig{VCPUCount: s.VCPU, MemSizeMiB: s.MemoryMiB}},
		{"/boot-source", BootSource{KernelImagePath: s.Vmlinux, InitrdPath: s.Initrd, BootArgs: BootArgs(s)}},
	}
	if links {
		if err := linkDrives(s); err != nil {
			return err
		}
	}
	for i, d := range s.Disks {
		id := vmm.DiskName(i)
		path := d.Path
		if links {
			path = driveLink(id)
		}
		puts = append(puts, put{"/drives/" + id, Drive{DriveID: id, PathOnHost: path, IsReadOnly: d.ReadOnly}})
	}
	if s.Net != nil && s.Net.Tap != "" {
		puts = append(puts, put{"/network-interfaces/eth0", NetworkInterface{IfaceID: "eth0", GuestMAC: s.Net.MAC, HostDevName: s.Net.Tap}})
	}
	puts = append(puts,
		put{"/vsock", Vsock{GuestCID: s.CID, UDSPath: p.vsock}},
		put{"/actions", InstanceAction{ActionType: "InstanceStart"}})
	for _, r := range puts {
		if err := c.Put(ctx, r.path, r.body); err != nil {
			return err
		}
	}
	return nil
}

// driveLink is the path Firecracker is given for drive id: relative to
// its working directory (the VM's runtime dir), where a symlink points at
// the disk. A snapshot's state records the drives' paths, so a restore
// into another VM's runtime dir opens that VM's own disks (what the
// jailer's chroot gives its users).
func driveLink(id string) string { return "drive-" + id }

// linkDrives makes s's drive symlinks in its runtime dir.
func linkDrives(s vmm.Spec) error {
	for i, d := range s.Disks {
		l := filepath.Join(s.RuntimeDir, driveLink(vmm.DiskName(i)))
		os.Remove(l)
		if err := os.Symlink(d.Path, l); err != nil {
			return fmt.Errorf("drive link: %w", err)
		}
	}
	return nil
}

// Start spawns Firecracker, configures and boots s. ctx bounds only the
// start-up; the VM keeps running after it ends.
func (d *Driver) Start(ctx context.Context, s vmm.Spec) (vmm.Handle, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	if len(s.Shares) > 0 {
		return nil, errors.New(d.Capabilities().NoShares)
	}
	if s.Vmlinux == "" {
		return nil, errors.New("firecracker needs an ELF vmlinux (Spec.Vmlinux): extract it from the bzImage at kernel pull")
	}
	if fi, err := os.Stat(s.Vmlinux); err != nil || !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("vmlinux %q: not a readable file", s.Vmlinux)
	}
	if s.CID < 3 {
		return nil, fmt.Errorf("vsock CID %d: want 3 or more", s.CID)
	}
	if pr := d.Probe(); !pr.Usable {
		return nil, fmt.Errorf("firecracker not usable: %s", pr.Reason)
	}
	bin, err := exec.LookPath(d.opt.Binary)
	if err != nil {
		return nil, err
	}
	for _, dir := range []string{s.Dir, s.RuntimeDir} {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, err
		}
	}
	// in is the Spec as Firecracker sees it, host maps its paths back:
	// the same without a jailer, inside the chroot with one.
	in, host := s, func(p string) string { return p }
	spawn := vmm.SpawnConfig{Path: bin}
	var mention string
	if jailer := d.jailer(); jailer != "" {
		j := newJail(s, bin, d.opt.JailUID, d.opt.JailGID)
		var err error
		if in, err = j.prepare(s); err != nil {
			return nil, err
		}
		host = j.host
		spawn.Path, spawn.Args = jailer, j.args(bin, pathsFor(in).api)
		mention = jailedMention(j.id)
	}
	p := pathsFor(in)
	api, vsock := host(p.api), host(p.vsock)
	// A socket that answers means a Firecracker for this VM still runs.
	if c, err := net.DialTimeout("unix", api, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("a Firecracker already serves %s: stop it (or adopt it) first", api)
	}
	for _, f := range []string{api, vsock} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	if mention == "" {
		// Firecracker runs in the runtime dir: the drive links are
		// relative to it (driveLink). The jailer chroots instead.
		spawn.Args, spawn.Dir = []string{"--api-sock", api}, s.RuntimeDir
		// The logger and metrics targets must exist before PUT /logger
		// and /metrics: Firecracker opens them without O_CREAT (the
		// jail made its own).
		for _, f := range []string{p.log, p.metrics} {
			fh, err := os.OpenFile(f, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
			if err != nil {
				return nil, err
			}
			fh.Close()
		}
	}
	// The console: Firecracker's stdout is a FIFO this driver copies into
	// the capped log, never a file the guest could grow without bound.
	cr, cw, err := vmm.MakeConsoleFIFO(s.RuntimeDir)
	if err != nil {
		return nil, err
	}
	stderr := filepath.Join(s.Dir, StderrFile)
	spawn.StdoutFile, spawn.Stderr = cw, stderr
	proc, err := vmm.Spawn(spawn)
	cw.Close()
	if err != nil {
		cr.Close()
		return nil, fmt.Errorf("%w: %s", err, vmm.Tail(stderr, 10))
	}
	h := &handle{d: d, Base: vmm.Base{Proc: proc, St: vmm.StateInfo{
		Driver: Name, PID: proc.PID(), StartTime: proc.StartTime(),
		ControlSocket: api, AgentSocket: vsock, AgentMode: vmm.AgentVsock, CID: s.CID,
		Dir: s.Dir, RuntimeDir: s.RuntimeDir, Mention: mention,
	}}}
	if err := h.pumpConsole(cr, true); err != nil {
		proc.Kill()
		return nil, err
	}
	fail := func(err error) (vmm.Handle, error) {
		proc.Kill()
		return nil, fmt.Errorf("start firecracker: %w\n%s\n%s", err, vmm.Tail(stderr, 10), vmm.Tail(host(p.log), 10))
	}
	if _, err := vmm.WaitForSocket(ctx, proc, "firecracker API", func() (struct{}, error) {
		c, err := net.Dial("unix", api)
		if err == nil {
			c.Close()
		}
		return struct{}{}, err
	}); err != nil {
		return fail(err)
	}
	if s.Incoming != nil {
		if mention != "" {
			return fail(errJailedSnapshot)
		}
		err = Restore(ctx, NewClient(api), in)
	} else {
		os.Remove(filepath.Join(s.Dir, MemoryFile)) // an earlier restore's
		err = configure(ctx, NewClient(api), in, mention == "")
	}
	if err != nil {
		return fail(err)
	}
	return h, nil
}

// jailer is the jailer binary to use, "" for none.
func (d *Driver) jailer() string {
	if d.opt.Jailer == "none" {
		return ""
	}
	p, err := exec.LookPath(d.opt.Jailer)
	if err != nil {
		return ""
	}
	return p
}

// Adopt re-attaches to a Firecracker started by an earlier daemon.
func (d *Driver) Adopt(st vmm.StateInfo) (vmm.Handle, error) {
	proc, err := vmm.AttachState(Name, st)
	if err != nil {
		return nil, err
	}
	h := &handle{d: d, Base: vmm.Base{Proc: proc, St: st}}
	// Take the console over from the earlier daemon (without one the
	// guest's console bytes were dropped).
	if r, err := vmm.OpenConsoleFIFO(st.RuntimeDir); err == nil {
		h.pumpConsole(r, false)
	}
	return h, nil
}

type handle struct {
	vmm.Base
	d *Driver
	// consoleDone is closed once the console copy has ended (nil: none).
	consoleDone <-chan struct{}
}

// pumpConsole copies the console FIFO r into the VM's capped log (fresh:
// a new boot's log).
func (h *handle) pumpConsole(r *os.File, fresh bool) error {
	log, err := vmm.OpenConsoleLog(filepath.Join(h.St.Dir, "console.log"), h.d.opt.ConsoleMaxBytes, fresh)
	if err != nil {
		r.Close()
		return fmt.Errorf("console log: %w", err)
	}
	h.consoleDone = vmm.PumpConsoleFile(r, log)
	return nil
}

// consoleDrain bounds how long Wait lets the console copy finish after
// Firecracker exited.
const consoleDrain = 5 * time.Second

// Wait returns when Firecracker is gone and its console is in the log.
func (h *handle) Wait(ctx context.Context) error {
	err := h.Proc.Wait(ctx)
	if h.consoleDone != nil && h.Proc.Exited() {
		select {
		case <-h.consoleDone:
		case <-time.After(consoleDrain):
		case <-ctx.Done():
		}
	}
	return err
}

// Stop sends Ctrl+Alt+Del (the guest's i8042 sees it; the kernel then
// signals init or reboots, and reboot=k makes Firecracker exit), waits up
// to StopTimeout or ctx, then kills.
func (h *handle) Stop(ctx context.Context) error {
	if h.Proc.Exited() {
		return nil
	}
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := NewClient(h.St.ControlSocket).Put(actx, "/actions", InstanceAction{ActionType: "SendCtrlAltDel"})
	cancel()
	if err == nil {
		wctx, cancel := context.WithTimeout(ctx, h.d.opt.StopTimeout)
		h.Proc.Wait(wctx)
		cancel()
	}
	if h.Proc.Exited() {
		return nil
	}
	return h.Proc.Kill()
}

// AgentConn connects to the guest agent over hybrid vsock.
func (h *handle) AgentConn(ctx context.Context) (net.Conn, error) {
	if h.Proc.Exited() {
		return nil, fmt.Errorf("agent: %w", vmm.ErrNotRunning)
	}
	return DialHybridVsock(ctx, h.St.AgentSocket, vmm.AgentPort)
}
