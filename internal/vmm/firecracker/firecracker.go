// Package firecracker runs VMs with Firecracker through a thin client over
// its API socket. Firecracker needs a working /dev/kvm and boots an ELF
// vmlinux (Spec.Vmlinux); its serial console is its stdout, which goes to
// console.log. The agent channel is Firecracker's hybrid vsock.
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
	p := pathsFor(s)
	puts := []put{
		{"/logger", Logger{LogPath: p.log, Level: "Info", ShowLevel: true}},
		{"/metrics", Metrics{MetricsPath: p.metrics}},
		{"/machine-config", MachineConfig{VCPUCount: s.VCPU, MemSizeMiB: s.MemoryMiB}},
		{"/boot-source", BootSource{KernelImagePath: s.Vmlinux, InitrdPath: s.Initrd, BootArgs: BootArgs(s)}},
	}
	for i, d := range s.Disks {
		id := vmm.DiskName(i)
		puts = append(puts, put{"/drives/" + id, Drive{DriveID: id, PathOnHost: d.Path, IsReadOnly: d.ReadOnly}})
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
	p := pathsFor(s)
	for _, dir := range []string{s.Dir, s.RuntimeDir} {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, err
		}
	}
	// A socket that answers means a Firecracker for this VM still runs.
	if c, err := net.DialTimeout("unix", p.api, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("a Firecracker already serves %s: stop it (or adopt it) first", p.api)
	}
	for _, f := range []string{p.api, p.vsock} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	// The logger and metrics targets must exist before PUT /logger and
	// /metrics: Firecracker opens them without O_CREAT.
	for _, f := range []string{p.log, p.metrics} {
		fh, err := os.OpenFile(f, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			return nil, err
		}
		fh.Close()
	}
	proc, err := vmm.Spawn(vmm.SpawnConfig{
		Path: bin, Args: []string{"--api-sock", p.api},
		Stdout: p.console, Stderr: p.stderr,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %s", err, vmm.Tail(p.stderr, 10))
	}
	h := &handle{d: d, Base: vmm.Base{Proc: proc, St: vmm.StateInfo{
		Driver: Name, PID: proc.PID(), StartTime: proc.StartTime(),
		ControlSocket: p.api, AgentSocket: p.vsock, AgentMode: vmm.AgentVsock, CID: s.CID,
		Dir: s.Dir, RuntimeDir: s.RuntimeDir,
	}}}
	fail := func(err error) (vmm.Handle, error) {
		proc.Kill()
		return nil, fmt.Errorf("start firecracker: %w\n%s\n%s", err, vmm.Tail(p.stderr, 10), vmm.Tail(p.log, 10))
	}
	if _, err := vmm.WaitForSocket(ctx, proc, "firecracker API", func() (struct{}, error) {
		c, err := net.Dial("unix", p.api)
		if err == nil {
			c.Close()
		}
		return struct{}{}, err
	}); err != nil {
		return fail(err)
	}
	if err := Configure(ctx, NewClient(p.api), s); err != nil {
		return fail(err)
	}
	return h, nil
}

// Adopt re-attaches to a Firecracker started by an earlier daemon.
func (d *Driver) Adopt(st vmm.StateInfo) (vmm.Handle, error) {
	proc, err := vmm.AttachState(Name, st)
	if err != nil {
		return nil, err
	}
	return &handle{d: d, Base: vmm.Base{Proc: proc, St: st}}, nil
}

type handle struct {
	vmm.Base
	d *Driver
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
