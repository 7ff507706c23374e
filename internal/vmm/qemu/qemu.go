// Package qemu runs VMs with qemu-system-x86_64 -M microvm: virtio-mmio
// block, net and agent devices, the console on a unix socket whose stream
// the driver copies into a size-capped log (vmm.ConsoleLog), a QMP socket for
// status and quit. It uses KVM when /dev/kvm really works and TCG otherwise
// (with tsc_early_khz= on the kernel command line: without it about half of
// TCG boots hang calibrating the TSC against the PIT).
package qemu

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"banger/internal/guestproto"
	"banger/internal/vmm"
)

// Name is the driver name, as in config `vmm = qemu`.
const Name = "qemu"

// Defaults for Options.
const (
	DefaultBinary      = "qemu-system-x86_64"
	DefaultTSCKHz      = 2000000
	DefaultStopTimeout = 20 * time.Second
	// DefaultRunAs is the system user banger's QEMUs drop to, where it
	// exists (scripts/install-deps.sh creates it).
	DefaultRunAs = "banger-vmm"
	// quitWait is how long Stop waits after QMP quit before SIGKILL.
	quitWait = 5 * time.Second
)

// Socket and file names inside Spec.RuntimeDir and Spec.Dir.
const (
	QMPSocket   = "qmp.sock"
	AgentSocket = "agent.sock"
	PIDFile     = "qemu.pid"
	LogFile     = "vmm.log" // QEMU's stdout and stderr, in Spec.Dir
)

// Options tune the driver; the zero value picks everything automatically.
type Options struct {
	Binary string // default DefaultBinary, looked up on PATH
	// Accel forces "kvm" or "tcg"; empty picks kvm when vmm.KVM() says
	// it works, else tcg.
	Accel string
	// TSCKHz is passed as tsc_early_khz= on TCG; 0 measures the host's
	// TSC (HostTSCKHz), falling back to DefaultTSCKHz.
	TSCKHz int
	// Agent forces vmm.AgentVsock or vmm.AgentSerial; empty picks vsock
	// when /dev/vhost-vsock is usable, else serial.
	Agent string
	// StopTimeout is how long Stop waits for the guest to power off after
	// system_powerdown before it quits QEMU (default DefaultStopTimeout).
	StopTimeout time.Duration
	// ConsoleMaxBytes caps each of the two console log generations
	// (default vmm.ConsoleMaxBytes).
	ConsoleMaxBytes int64
	// RunAs is the unprivileged user QEMU drops to once its devices
	// (tap, disks, sockets) are open; empty keeps root.
	RunAs string
	// TBSizeMiB caps TCG's translation cache (-accel tcg,tb-size=), which
	// is most of an idle TCG guest's QEMU RSS; 0 keeps QEMU's default.
	TBSizeMiB int
	// ShareTransport forces vmm.ShareVirtiofs or vmm.Share9p for
	// Spec.Shares; empty picks virtio-fs where a virtiofsd exists, else
	// 9p (QEMU's built-in server).
	ShareTransport string
}

// Driver is the QEMU microvm driver.
type Driver struct {
	opt Options

	probeOnce sync.Once
	probe     vmm.ProbeResult
	agentMode string
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
	return &Driver{opt: o}
}

// Name returns "qemu".
func (d *Driver) Name() string { return Name }

// Probe checks the binary, its microvm machine and the accelerator; the
// result is computed once per Driver.
func (d *Driver) Probe() vmm.ProbeResult {
	d.probeOnce.Do(func() { d.probe, d.agentMode = d.doProbe() })
	return d.probe
}

// AgentMode is vsock with a usable /dev/vhost-vsock, else serial.
func (d *Driver) AgentMode() string {
	d.Probe()
	return d.agentMode
}

func (d *Driver) doProbe() (vmm.ProbeResult, string) {
	mode := d.opt.Agent
	if mode == "" {
		mode = vmm.AgentSerial
		if ok, _ := vmm.VhostVsockUsable(); ok {
			mode = vmm.AgentVsock
		}
	}
	bin, err := exec.LookPath(d.opt.Binary)
	if err != nil {
		return vmm.ProbeResult{Reason: fmt.Sprintf("%s not found: install qemu-system-x86", d.opt.Binary)}, mode
	}
	out, err := exec.Command(bin, "-machine", "help").CombinedOutput()
	if err != nil {
		return vmm.ProbeResult{Reason: fmt.Sprintf("%s -machine help: %v: %s", bin, err, strings.TrimSpace(string(out)))}, mode
	}
	if !hasMachine(string(out), "microvm") {
		return vmm.ProbeResult{Reason: bin + " has no microvm machine type (QEMU 4.2 or later needed)"}, mode
	}
	accel, why := d.opt.Accel, ""
	switch accel {
	case "kvm":
		why = "kvm (forced)"
	case "tcg":
		why = "tcg (forced)"
	case "":
		if ok, r := vmm.KVM(); ok {
			accel, why = "kvm", "kvm: "+r
		} else {
			accel, why = "tcg", "tcg (slow, software emulation): "+r
		}
	default:
		return vmm.ProbeResult{Reason: fmt.Sprintf("unknown accel %q: want kvm, tcg or empty", accel)}, mode
	}
	priv := "; runs as root under seccomp (create the " + DefaultRunAs + " user to drop root: scripts/install-deps.sh)"
	if d.opt.RunAs != "" {
		priv = "; drops to user " + d.opt.RunAs + " under seccomp"
	}
	return vmm.ProbeResult{Usable: true, Accel: accel, Reason: why + "; agent over " + mode + priv}, mode
}

func hasMachine(help, name string) bool {
	for _, l := range strings.Split(help, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == name {
			return true
		}
	}
	return false
}

// paths are where one VM's files and sockets live.
type paths struct{ qmp, agent, pid, log, console, consoleSock string }

func pathsFor(s vmm.Spec) paths {
	return paths{
		qmp:         filepath.Join(s.RuntimeDir, QMPSocket),
		agent:       filepath.Join(s.RuntimeDir, AgentSocket),
		pid:         filepath.Join(s.RuntimeDir, PIDFile),
		log:         filepath.Join(s.Dir, LogFile),
		console:     s.Console(),
		consoleSock: vmm.ConsoleSocket(s.RuntimeDir),
	}
}

// Args returns QEMU's command line for s (without the binary). accel is
// "kvm" or "tcg", agent vmm.AgentVsock or vmm.AgentSerial.
func (d *Driver) Args(s vmm.Spec, accel, agent string) []string {
	p := pathsFor(s)
	cpu := "host"
	if accel != "kvm" {
		cpu = "max"
	}
	// acpi=on: the power button (system_powerdown) is an ACPI GED event.
	// acpi=off for a kernel that boots Firecracker-style (MMIOCmdline):
	// QEMU then writes an MP table instead of ACPI tables and, with its
	// default auto-kernel-cmdline=on, appends a virtio_mmio.device= for
	// every virtio-mmio device to the command line, as Firecracker does.
	// pit/pic on: measured to boot reliably on TCG. rtc=on with base=utc:
	// the guest's rtc_cmos sets its clock from the host's at boot (with
	// rtc=off a guest starts in 1970).
	// -accel and -M accel= cannot be mixed: -accel only when it carries
	// an option.
	machine, accelArgs := "microvm,accel="+accel+",", []string(nil)
	if accel == "tcg" && d.opt.TBSizeMiB > 0 {
		machine, accelArgs = "microvm,", []string{"-accel", "tcg,tb-size=" + strconv.Itoa(d.opt.TBSizeMiB)}
	}
	acpi := "on"
	if s.MMIOCmdline {
		acpi = "off" // Firecracker-style: devices on the command line
	}
	machine += "acpi=" + acpi + ",x-option-roms=off,isa-serial=on,rtc=on,pit=on,pic=on"
	var mem []string
	if len(s.Shares) > 0 && d.shareTransport() == vmm.ShareVirtiofs {
		// virtiofsd reads and writes guest memory directly (vhost-user):
		// the RAM must be a shared mapping it can map too.
		machine += ",memory-backend=mem"
		mem = []string{"-object", fmt.Sprintf("memory-backend-memfd,id=mem,size=%dM,share=on", s.MemoryMiB),
			// microvm's virtio-mmio is legacy (v1) by default, which
			// libvhost-user (virtiofsd) refuses: "virtio legacy devices
			// aren't supported". Only these VMs get modern transports, so
			// the saved states of the others keep their layout.
			"-global", "virtio-mmio.force-legacy=false"}
	}
	a := []string{
		"-name", "guest=" + qemuEscape(s.Name),
		"-M", machine,
		"-rtc", "base=utc",
		"-cpu", cpu,
		"-smp", strconv.Itoa(s.VCPU),
		"-m", strconv.Itoa(s.MemoryMiB),
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		// seccomp: QEMU may not spawn, change its credentials afterwards,
		// call obsolete syscalls or change scheduling/resource limits.
		"-sandbox", "on,obsolete=deny,elevateprivileges=" + d.elevate() + ",spawn=deny,resourcecontrol=deny",
		// The console is a socket, not a file: the driver caps what a
		// guest may write to the host's disk. wait=on holds the boot until
		// the driver is attached (no early line is lost); once the driver
		// (daemon) is gone QEMU drops console bytes instead of blocking.
		"-chardev", "socket,id=console,path=" + qemuEscape(p.consoleSock) + ",server=on,wait=on",
		"-serial", "chardev:console",
		"-kernel", bootKernel(s),
	}
	a = append(a, accelArgs...)
	a = append(a, mem...)
	if s.Initrd != "" {
		a = append(a, "-initrd", s.Initrd)
	}
	a = append(a, "-append", d.KernelCmdline(s, accel))
	// The disks are passed as fds (passedFiles, in this order): QEMU drops
	// to -runas and may have to reopen a disk later (a migration hands the
	// images over read-only and back), which by path it could not. An
	// fdset holds a read-only fd and, for a writable disk, a read-write
	// one; QEMU picks by access mode. QEMU's image locking is off: with
	// two descriptions of one file in a set it refuses its own reopen, and
	// the daemon already guarantees one VMM per VM's disks. drop-cache=off:
	// a VM restored from a state (-incoming) would otherwise evict the
	// host's page cache of every disk it opens when it starts running,
	// the image's shared read-only rootfs included, under every other VM
	// of that image; QEMU drops it for a live migration whose source
	// host wrote the disks, and a saved state has no such source.
	fd := 3
	if s.Incoming != nil {
		fd++
	}
	for i, disk := range s.Disks {
		id := vmm.DiskName(i)
		set := i + 1
		a = append(a, "-add-fd", fmt.Sprintf("fd=%d,set=%d", fd, set))
		fd++
		if !disk.ReadOnly {
			a = append(a, "-add-fd", fmt.Sprintf("fd=%d,set=%d", fd, set))
			fd++
		}
		drive := "id=" + id + ",file=/dev/fdset/" + strconv.Itoa(set) + ",format=raw,if=none,discard=unmap,file.locking=off,file.drop-cache=off"
		if disk.ReadOnly {
			drive += ",readonly=on"
		}
		dev := "virtio-blk-device,drive=" + id
		if disk.Serial != "" {
			dev += ",serial=" + qemuEscape(disk.Serial)
		}
		a = append(a, "-drive", drive, "-device", dev)
	}
	if s.Net != nil && s.Net.Tap != "" {
		a = append(a,
			"-netdev", "tap,id=net0,ifname="+s.Net.Tap+",script=no,downscript=no",
			"-device", "virtio-net-device,netdev=net0,mac="+s.Net.MAC)
	}
	a = append(a, d.shareArgs(s)...)
	if s.Balloon {
		// Free page reporting only: no inflation target is ever set. The
		// guest reports free 2 MiB blocks and QEMU discards them, so an
		// idle guest's RSS follows what it uses, not what it once
		// touched.
		a = append(a, "-device", "virtio-balloon-device,free-page-reporting=on")
	}
	if agent == vmm.AgentVsock {
		a = append(a, "-device", fmt.Sprintf("vhost-vsock-device,guest-cid=%d", s.CID))
	} else {
		a = append(a,
			"-device", "virtio-serial-device",
			"-chardev", "socket,id=agent,path="+qemuEscape(p.agent)+",server=on,wait=off",
			"-device", "virtserialport,chardev=agent,name="+guestproto.AgentSerialName)
	}
	a = append(a,
		"-qmp", "unix:"+p.qmp+",server=on,wait=off",
		"-pidfile", p.pid)
	if s.Incoming != nil {
		// Spec.Incoming is fd 3 (passedFiles). Everything above stays as
		// it was at the save: QEMU matches devices by their order and ids.
		a = append(a, "-incoming", "fd:3")
	}
	if d.opt.RunAs != "" {
		a = append(a, "-runas", d.opt.RunAs)
	}
	return a
}

// bootKernel is the file QEMU loads: a Firecracker-style kernel as the
// ELF vmlinux where there is one (its PVH entry: no decompression in the
// guest, ~180 ms of a ~1 s boot under TCG, and how Firecracker loads it),
// else the bzImage. Deterministic per spec, so a restore loads what the
// saved VM booted.
func bootKernel(s vmm.Spec) string {
	if s.MMIOCmdline && s.Vmlinux != "" {
		return s.Vmlinux
	}
	return s.Kernel
}

// passedFiles opens what QEMU gets as fds 3, 4, … in Args's order: the
// incoming state, then per disk a read-only fd and, unless the disk is
// read-only, a read-write one.
func passedFiles(s vmm.Spec) ([]*os.File, error) {
	var files []*os.File
	if s.Incoming != nil {
		files = append(files, s.Incoming)
	}
	fail := func(err error) ([]*os.File, error) {
		for _, f := range files {
			if f != s.Incoming {
				f.Close()
			}
		}
		return nil, err
	}
	for i, disk := range s.Disks {
		flags := []int{os.O_RDONLY}
		if !disk.ReadOnly {
			flags = append(flags, os.O_RDWR)
		}
		for _, fl := range flags {
			f, err := os.OpenFile(disk.Path, fl|syscall.O_CLOEXEC, 0)
			if err != nil {
				return fail(fmt.Errorf("disk %s: %w", vmm.DiskName(i), err))
			}
			files = append(files, f)
		}
	}
	return files, nil
}

// KernelCmdline is the command line the guest gets: console, reboot and
// panic handling (a panic or reboot ends QEMU thanks to -no-reboot), the
// TSC on TCG (see tsc.go), then the daemon's banger.* arguments.
func (d *Driver) KernelCmdline(s vmm.Spec, accel string) string {
	c := "console=ttyS0 reboot=t panic=-1 quiet"
	if accel != "kvm" {
		c += " tsc=reliable tsc_early_khz=" + strconv.Itoa(d.tscKHz())
	}
	if s.Cmdline != "" {
		c += " " + s.Cmdline
	}
	return c
}

// elevate is the seccomp elevateprivileges setting. QEMU 7.2 installs the
// filter before it drops to -runas, and the drop is a setuid: with RunAs
// the filter must allow it (measured: "children" kills QEMU with SIGSYS).
// Once dropped, QEMU has no privilege left to elevate to.
func (d *Driver) elevate() string {
	if d.opt.RunAs != "" {
		return "allow"
	}
	return "deny"
}

// tscKHz is the guest's TSC frequency on TCG: the option, else the host
// TSC's measured frequency, else DefaultTSCKHz.
func (d *Driver) tscKHz() int {
	if d.opt.TSCKHz != 0 {
		return d.opt.TSCKHz
	}
	if k := HostTSCKHz(); k != 0 {
		return k
	}
	return DefaultTSCKHz
}

// qemuEscape doubles commas, QEMU's escape inside option values.
func qemuEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// Start boots s and returns once QEMU answers on its QMP socket. ctx bounds
// only the start-up: the VM keeps running after ctx ends.
func (d *Driver) Start(ctx context.Context, s vmm.Spec) (vmm.Handle, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	if s.Kernel == "" {
		return nil, errors.New("qemu needs a kernel image (Spec.Kernel)")
	}
	if fi, err := os.Stat(bootKernel(s)); err != nil || !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("kernel %q: not a readable file", bootKernel(s))
	}
	for _, p := range []string{s.Dir, s.RuntimeDir} {
		if strings.ContainsAny(p, ",:") {
			return nil, fmt.Errorf("path %q: QEMU cannot take ',' or ':' in the VM or runtime dir", p)
		}
	}
	pr := d.Probe()
	if !pr.Usable {
		return nil, fmt.Errorf("qemu not usable: %s", pr.Reason)
	}
	mode := d.AgentMode()
	if mode == vmm.AgentVsock && s.CID < 3 {
		return nil, fmt.Errorf("vsock CID %d: want 3 or more", s.CID)
	}
	p := pathsFor(s)
	for _, dir := range []string{s.Dir, s.RuntimeDir} {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, err
		}
	}
	// A live QMP socket means a VMM for this VM still runs: never start a
	// second one on the same disks.
	if q, err := DialQMP(ctx, p.qmp); err == nil {
		q.Close()
		return nil, fmt.Errorf("a QEMU already serves %s: stop it (or adopt it) first", p.qmp)
	}
	for _, f := range []string{p.qmp, p.agent, p.pid, p.consoleSock} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	bin, err := exec.LookPath(d.opt.Binary)
	if err != nil {
		return nil, err
	}
	files, err := passedFiles(s)
	if err != nil {
		return nil, err
	}
	// The share servers first: QEMU connects to their sockets at start.
	helpers, hstate, err := d.startShares(s)
	if err != nil {
		closeFiles(files, s.Incoming)
		return nil, err
	}
	sc := vmm.SpawnConfig{Path: bin, Args: d.Args(s, pr.Accel, mode), Stdout: p.log, ExtraFiles: files}
	proc, err := vmm.Spawn(sc)
	closeFiles(files, s.Incoming) // QEMU has its own copies
	if err != nil {
		killAll(helpers)
		return nil, fmt.Errorf("%w: %s", err, vmm.Tail(p.log, 10))
	}
	h := &handle{d: d, helpers: helpers, Base: vmm.Base{Proc: proc, St: vmm.StateInfo{
		Driver: Name, PID: proc.PID(), StartTime: proc.StartTime(),
		ControlSocket: p.qmp, AgentMode: mode, CID: s.CID,
		Dir: s.Dir, RuntimeDir: s.RuntimeDir, Helpers: hstate,
	}}}
	if mode == vmm.AgentSerial {
		h.St.AgentSocket = p.agent
	}
	if err := h.attachConsole(ctx, true); err != nil {
		h.Kill()
		return nil, fmt.Errorf("start qemu: %w\n%s", err, vmm.Tail(p.log, 10))
	}
	if err := h.waitQMP(ctx, s.Incoming != nil); err != nil {
		h.Kill()
		return nil, fmt.Errorf("start qemu: %w\n%s", err, vmm.Tail(p.log, 10))
	}
	return h, nil
}

// Adopt re-attaches to a QEMU started by an earlier daemon.
func (d *Driver) Adopt(st vmm.StateInfo) (vmm.Handle, error) {
	proc, err := vmm.AttachState(Name, st)
	if err != nil {
		return nil, err
	}
	h := &handle{d: d, Base: vmm.Base{Proc: proc, St: st}, helpers: adoptHelpers(st.Helpers)}
	// The console stream is the earlier daemon's no more: take it over.
	// A VM whose console cannot be re-attached still runs; its console
	// output is dropped by QEMU until the next start.
	if _, err := os.Stat(vmm.ConsoleSocket(st.RuntimeDir)); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = h.attachConsole(ctx, false)
	}
	return h, nil
}

type handle struct {
	vmm.Base
	d *Driver
	// helpers are the share servers (virtiofsd), one per share; they
	// exit by themselves once QEMU is gone, and are killed if they do not.
	helpers []*vmm.Process
	// consoleDone is closed once the console copy has ended (nil: none).
	consoleDone <-chan struct{}
}

// consoleDrain bounds how long Wait lets the console copy finish after
// QEMU exited: the last lines are in the socket, not yet in the log.
const consoleDrain = 5 * time.Second

// Wait returns when QEMU is gone and its console is in the log, so a
// caller reading the log after Wait sees the guest's last lines.
func (h *handle) Wait(ctx context.Context) error {
	err := h.Proc.Wait(ctx)
	if h.Proc.Exited() {
		reapHelpers(h.helpers)
	}
	if h.consoleDone != nil && h.Proc.Exited() {
		select {
		case <-h.consoleDone:
		case <-time.After(consoleDrain):
		case <-ctx.Done():
		}
	}
	return err
}

// attachConsole connects to QEMU's console socket and copies the stream
// into the VM's capped console log (fresh: a new boot's log).
func (h *handle) attachConsole(ctx context.Context, fresh bool) error {
	sock := vmm.ConsoleSocket(h.St.RuntimeDir)
	conn, err := vmm.WaitForSocket(ctx, h.Proc, "console", func() (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	})
	if err != nil {
		return err
	}
	log, err := vmm.OpenConsoleLog(filepath.Join(h.St.Dir, "console.log"), h.d.opt.ConsoleMaxBytes, fresh)
	if err != nil {
		conn.Close()
		return fmt.Errorf("console log: %w", err)
	}
	h.consoleDone = vmm.PumpConsole(conn, log)
	return nil
}

// incomingTimeout bounds the load of a saved state (Spec.Incoming).
const incomingTimeout = 3 * time.Minute

// waitQMP waits for the QMP socket and checks the VM runs. A VM restored
// from a saved state runs once QEMU has read all of it ("inmigrate" until
// then); a state QEMU cannot load makes it exit.
func (h *handle) waitQMP(ctx context.Context, incoming bool) error {
	q, err := vmm.WaitForSocket(ctx, h.Proc, "qmp", func() (*QMP, error) {
		return DialQMP(ctx, h.St.ControlSocket)
	})
	if err != nil {
		return err
	}
	defer q.Close()
	deadline := time.Now().Add(incomingTimeout)
	for {
		st, err := q.QueryStatus(ctx)
		if err != nil {
			return err
		}
		if st.Running {
			return nil
		}
		// The state carries the source's run state, which SaveState
		// paused: a loaded state waits for cont.
		if incoming && st.Status == "paused" {
			if err := q.Cont(ctx); err != nil {
				return fmt.Errorf("run the restored VM: %w", err)
			}
			continue
		}
		if !incoming || st.Status != "inmigrate" || time.Now().After(deadline) {
			return fmt.Errorf("qemu status %q, want running", st.Status)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-h.Proc.Done():
			return errors.New("qemu exited while loading the saved state")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

var _ vmm.Snapshotter = (*handle)(nil)

// Pause stops the vCPUs (QMP stop).
func (h *handle) Pause(ctx context.Context) error {
	return h.qmp(ctx, func(q *QMP) error { return q.Stop(ctx) })
}

// Resume runs them again (QMP cont), after ending a state save still in
// flight: a daemon killed in SaveState leaves QEMU writing the state into
// the fd it was given, and if that migration completes after the cont,
// QEMU stops the VM again (postmigrate) and the guest never answers.
func (h *handle) Resume(ctx context.Context) error {
	return h.qmp(ctx, func(q *QMP) error {
		if err := endMigration(ctx, q); err != nil {
			return err
		}
		return q.Cont(ctx)
	})
}

// migrationDone: query-migrate statuses after which nothing more happens.
func migrationDone(status string) bool {
	switch status {
	case "", "none", "completed", "failed", "cancelled":
		return true
	}
	return false
}

// endMigration cancels a migration in progress and waits until QEMU says
// it has ended.
func endMigration(ctx context.Context, q *QMP) error {
	cancelled := false
	for {
		m, err := q.QueryMigrate(ctx)
		if err != nil {
			return err
		}
		if migrationDone(m.Status) {
			return nil
		}
		if !cancelled {
			if _, err := q.Execute(ctx, "migrate_cancel", nil); err != nil {
				return err
			}
			cancelled = true
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("a state save in progress did not end: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Paused asks QEMU (query-status): "paused", and "postmigrate" after a
// SaveState, count as paused.
func (h *handle) Paused(ctx context.Context) (bool, error) {
	var paused bool
	err := h.qmp(ctx, func(q *QMP) error {
		st, err := q.QueryStatus(ctx)
		paused = err == nil && !st.Running
		return err
	})
	return paused, err
}

// saveFD is the name SaveState's file has inside QEMU (getfd).
const saveFD = "banger-state"

// SaveState migrates the paused VM into f, handed to QEMU over QMP
// (QEMU 7.2 has no "file:" migration, and with -sandbox spawn=deny no
// "exec:"; an fd works everywhere). The VM is paused, so the migration
// runs at full speed in one pass; when it completes QEMU has flushed and
// released the disks (state "postmigrate") until Resume.
func (h *handle) SaveState(ctx context.Context, f *os.File) error {
	q, err := DialQMP(ctx, h.St.ControlSocket)
	if err != nil {
		return err
	}
	defer q.Close()
	if err := q.GetFD(ctx, saveFD, f); err != nil {
		return err
	}
	// max-bandwidth throttles a live migration for the guest's sake: the
	// guest is paused, so take the disk's speed.
	if _, err := q.Execute(ctx, "migrate-set-parameters", map[string]any{"max-bandwidth": int64(1) << 40}); err != nil {
		return err
	}
	if _, err := q.Execute(ctx, "migrate", map[string]any{"uri": "fd:" + saveFD}); err != nil {
		return err
	}
	for {
		m, err := q.QueryMigrate(ctx)
		if err != nil {
			return err
		}
		switch m.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("qemu migration %s: %s %s", m.Status, m.ErrorDesc, vmm.Tail(filepath.Join(h.St.Dir, LogFile), 5))
		}
		select {
		case <-ctx.Done():
			cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			endMigration(cctx, q)
			cancel()
			return ctx.Err()
		case <-h.Proc.Done():
			return errors.New("qemu exited while saving the state")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// qmp runs f on a fresh QMP connection.
func (h *handle) qmp(ctx context.Context, f func(*QMP) error) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	q, err := DialQMP(ctx, h.St.ControlSocket)
	if err != nil {
		return err
	}
	defer q.Close()
	return f(q)
}

// Stop presses the ACPI power button, waits up to StopTimeout (or ctx) for
// the guest to power off, then QMP quit, then SIGKILL.
//
// Under microvm, system_powerdown only raises KEY_POWER on the guest's
// ACPI "Power Button" input device (needs the button and evdev modules);
// the guest halts only if its init acts on that key. The portable graceful
// path is the agent's poweroff request, which the daemon sends before Stop.
func (h *handle) Stop(ctx context.Context) error {
	if h.Proc.Exited() {
		reapHelpers(h.helpers)
		return nil
	}
	// The power button is a courtesy: its failure must not stop the stop.
	_ = h.qmp(ctx, func(q *QMP) error { return q.SystemPowerdown(ctx) })
	wctx, cancel := context.WithTimeout(ctx, h.d.opt.StopTimeout)
	h.Proc.Wait(wctx)
	cancel()
	if h.Proc.Exited() {
		reapHelpers(h.helpers)
		return nil
	}
	_ = h.qmp(context.Background(), func(q *QMP) error { return q.Quit(context.Background()) })
	select {
	case <-h.Proc.Done():
		reapHelpers(h.helpers)
		return nil
	case <-time.After(quitWait):
	}
	return h.Kill()
}

// Kill ends QEMU at once, then its share servers.
func (h *handle) Kill() error {
	err := h.Proc.Kill()
	killAll(h.helpers)
	return err
}

// AgentConn dials the agent channel. The virtio-serial chardev serves one
// client at a time: a second connection is accepted by the kernel but gets
// no data until the first closes.
func (h *handle) AgentConn(ctx context.Context) (net.Conn, error) {
	if h.Proc.Exited() {
		return nil, fmt.Errorf("agent: %w", vmm.ErrNotRunning)
	}
	if h.St.AgentMode == vmm.AgentVsock {
		return vmm.DialVsock(ctx, h.St.CID, vmm.AgentPort)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", h.St.AgentSocket)
	if err != nil {
		return nil, fmt.Errorf("agent socket: %w", err)
	}
	return c, nil
}
