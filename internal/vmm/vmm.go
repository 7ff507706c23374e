// Package vmm is the one interface the daemon uses to run a microVM, whatever
// the hypervisor. Each hypervisor lives in its own package (vmm/qemu,
// vmm/firecracker) and implements Driver; the daemon never branches on which
// one it holds, the way Lima's pkg/driver hides qemu, vz and wsl2.
//
// A VMM process outlives the daemon that started it: it runs in its own
// session with its stdio on files, so a daemon that is killed and restarted
// finds it still running and re-attaches with Driver.Adopt, using the
// StateInfo it persisted.
package vmm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"banger/internal/guestproto"
)

// AgentPort is the guest agent's vsock port (guestproto.AgentVsockPort).
const AgentPort = guestproto.AgentVsockPort

// Agent transports, as written into banger.agent= on the kernel command line.
const (
	AgentVsock  = guestproto.AgentVsock
	AgentSerial = guestproto.AgentSerial
)

// MaxUnixPath is the longest unix socket path the kernel accepts
// (sizeof(sun_path) - 1 for the terminating NUL).
const MaxUnixPath = 107

// Disk is one virtio block device. Spec.Disks is in guest order: the first
// is vda, then vdb, vdc, vdd.
type Disk struct {
	Path     string
	ReadOnly bool
	// Serial is the virtio-blk serial the guest reads in
	// /sys/block/vdX/serial (guestproto.Serial*), so banger-init finds a
	// disk by role whatever the probe order. Drivers that cannot set one
	// (Firecracker reports its drive id) leave the guest the attach order.
	Serial string
}

// NetConfig attaches the VM to an existing host tap device. A nil
// Spec.Net (or an empty Tap) means no network device.
type NetConfig struct {
	Tap string // host tap name, e.g. from hostnet.TapName
	MAC string // guest MAC, e.g. from hostnet.MACFromIP
}

// Spec is everything a driver needs to boot one VM.
type Spec struct {
	ID   string
	Name string
	// Dir is the VM's own directory; console.log, vmm.log (the VMM's
	// stderr), firecracker.log and metrics.json are written there.
	Dir string
	// RuntimeDir holds the VM's sockets. Keep it short: every socket path
	// must fit MaxUnixPath bytes.
	RuntimeDir string

	VCPU      int
	MemoryMiB int

	Kernel  string // bzImage (qemu)
	Vmlinux string // ELF vmlinux (firecracker)
	Initrd  string
	// MMIOCmdline: boot Firecracker-style: no ACPI tables, the virtio-mmio
	// devices announced on the kernel command line (virtio_mmio.device=).
	// Set for kernels whose manifest says so (boot "mmio"): everything
	// built in, CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES on. A VMM that always
	// boots this way (Firecracker) ignores it.
	MMIOCmdline bool
	// Balloon adds a virtio-balloon with free page reporting (only where
	// Capabilities.FreePageReporting). Part of the device layout: a
	// restore must have it exactly when the saved VM had it.
	Balloon bool
	// Cmdline carries the banger.* arguments (guestproto.Config.Args). The
	// driver prepends its own console, reboot and clock arguments.
	Cmdline string

	Disks []Disk
	Net   *NetConfig
	// Shares are host directories the guest mounts (Capabilities.Shares;
	// a driver without it refuses a Spec that has any).
	Shares []Share
	// CID is the guest's vsock context id (>= 3), unique per host.
	CID uint32

	// Incoming, when set, restores the VM from this saved state
	// (Snapshotter.SaveState's output) instead of booting the kernel: the
	// device layout (disks in the same order, a network device or not, the
	// agent transport, vCPUs, memory) must be the one the state was saved
	// with. The daemon opens the file: a sandboxed VMM that dropped its
	// privileges cannot open root's paths. Start returns once the guest
	// runs again; the caller keeps and closes the file.
	Incoming *os.File
}

// Share transports (Capabilities.ShareTransport), as written into
// banger.share= on the kernel command line.
const (
	ShareVirtiofs = guestproto.ShareVirtiofs
	Share9p       = guestproto.Share9p
)

// MaxShares bounds a VM's host directory shares.
const MaxShares = 8

// Share is one host directory exposed to the guest under Tag.
type Share struct {
	// Tag is the mount tag the guest mounts (virtio-fs tag, 9p mount_tag).
	Tag string
	// HostPath is an absolute, symlink-free directory the daemon checked
	// the owner may read (and write unless ReadOnly).
	HostPath string
	ReadOnly bool
	// UID, GID and Groups are the identity the share is served with: the
	// file server reaches the host only with the VM owner's rights. A uid
	// of 0 serves as root.
	UID, GID uint32
	Groups   []uint32
}

// Console returns the path of the guest's serial console log.
func (s Spec) Console() string { return filepath.Join(s.Dir, "console.log") }

// StateInfo is what the daemon persists (as JSON) for a running VM so a
// restarted daemon can Adopt the VMM process.
type StateInfo struct {
	Driver string `json:"driver"`
	PID    int    `json:"pid"`
	// StartTime is field 22 of /proc/<pid>/stat (clock ticks after boot):
	// with the pid it names one process, so a recycled pid is not adopted.
	StartTime uint64 `json:"start_time"`
	// ControlSocket is the QMP socket (qemu) or the API socket
	// (firecracker); the process's command line must mention it.
	ControlSocket string `json:"control_socket"`
	// AgentSocket is the unix socket behind the agent channel: qemu's
	// virtio-serial chardev or firecracker's hybrid vsock uds_path. Empty
	// for vhost-vsock.
	AgentSocket string `json:"agent_socket,omitempty"`
	AgentMode   string `json:"agent_mode"`
	CID         uint32 `json:"cid,omitempty"`
	Dir         string `json:"dir"`
	RuntimeDir  string `json:"runtime_dir"`
	// Mention, when set, is what the process's command line must carry
	// instead of ControlSocket (a jailed Firecracker knows its socket by
	// a path inside its chroot only).
	Mention string `json:"mention,omitempty"`
	// Helpers are processes serving the VM beside the VMM (one virtiofsd
	// per share), adopted and stopped with it.
	Helpers []HelperState `json:"helpers,omitempty"`
}

// HelperState names one helper process (pid and start time, as StateInfo)
// and what its command line must mention.
type HelperState struct {
	PID       int    `json:"pid"`
	StartTime uint64 `json:"start_time"`
	Mention   string `json:"mention"`
}

// ProbeResult says whether a driver can run on this host.
type ProbeResult struct {
	Usable bool
	Reason string // why not, or what it will use ("kvm", "tcg: no usable /dev/kvm ...")
	Accel  string // "kvm" or "tcg"; empty when not usable
}

// Handle is one running VMM process.
type Handle interface {
	PID() int
	// AgentConn opens a byte stream to the guest agent. For the serial
	// transport there is one stream per VM: a second AgentConn while the
	// first is open blocks in QEMU until the first is closed.
	AgentConn(ctx context.Context) (net.Conn, error)
	// Stop asks the guest to shut down, waits up to the driver's stop
	// timeout or ctx, then kills the VMM. It returns once the process is
	// gone.
	Stop(ctx context.Context) error
	// Kill ends the VMM at once (SIGKILL) and waits for it to be gone.
	Kill() error
	// Wait returns when the VMM process has exited: nil, or the exit error
	// when this daemon started it and it exited non-zero. It returns
	// ctx.Err() if ctx ends first.
	Wait(ctx context.Context) error
	// State is what to persist to Adopt this VMM later.
	State() (StateInfo, error)
}

// Snapshotter is what the Handles of a driver with Capabilities.Snapshots
// can do besides running: stop and resume the vCPUs, and write the
// memory and device state of a paused VM to a file.
type Snapshotter interface {
	// Pause stops the vCPUs; the VMM keeps its devices and connections.
	Pause(ctx context.Context) error
	// Resume runs the vCPUs again (after Pause or SaveState).
	Resume(ctx context.Context) error
	// Paused reports whether the vCPUs are stopped (asked of the VMM, so
	// a restarted daemon learns it from the process itself).
	Paused(ctx context.Context) (bool, error)
	// SaveState writes the memory and device state of the paused VM to
	// f, which the caller opened for writing, and returns once it is all
	// written. The VM stays paused, its disks flushed: copies of them
	// taken before Resume belong with the state.
	SaveState(ctx context.Context, f *os.File) error
}

// ErrNoSnapshots is the error of a snapshot operation on a driver without
// Capabilities.Snapshots.
var ErrNoSnapshots = errors.New("this hypervisor cannot pause or snapshot VMs")

// Driver is one hypervisor. The daemon reads what a driver can do from
// Capabilities and never asks which driver it holds (Lima's pkg/driver).
type Driver interface {
	// Name identifies the driver in the config (`vmm = NAME`), in doctor
	// and in persisted StateInfo; the daemon never branches on it.
	Name() string
	Probe() ProbeResult
	// Capabilities says what the driver can do on this host. Cheap: the
	// daemon calls it on every start.
	Capabilities() Capabilities
	Start(ctx context.Context, s Spec) (Handle, error)
	// Adopt re-attaches to a VMM a previous daemon started. It fails with
	// ErrNotRunning when that process is gone (or its pid now names another
	// process).
	Adopt(st StateInfo) (Handle, error)
}

// Kernel formats a driver can boot.
const (
	KernelBzImage = "bzImage" // Spec.Kernel
	KernelVmlinux = "vmlinux" // Spec.Vmlinux (uncompressed ELF)
)

// Network modes.
const (
	// NetworkTap: the guest gets a virtio-net device on a host tap the
	// daemon creates on its bridge (Spec.Net).
	NetworkTap = "tap"
	// NetworkNone: no guest network device; the daemon creates no bridge,
	// tap, NAT or forward for the VM and refuses --nat and -p.
	NetworkNone = "none"
)

// Capabilities is what a driver can do: the one table of limits that both
// the daemon's validation and the driver's Spec.Validate use.
type Capabilities struct {
	// KernelFormats the driver boots, in order of preference.
	KernelFormats []string
	// DefaultKernel, when set, replaces the catalog's default kernel for
	// images that ask for the default (e.g. a kernel whose virtio-mmio
	// devices come from the command line, for a VMM without ACPI).
	DefaultKernel string
	MaxVCPU       int
	MinMemoryMiB  int
	MaxMemoryMiB  int
	// Agent is the agent transport (AgentVsock or AgentSerial), written
	// into banger.agent= on the kernel command line.
	Agent string
	// Network is NetworkTap or NetworkNone.
	Network string
	// Shares: host directory shares (Spec.Shares), served over
	// ShareTransport (ShareVirtiofs or Share9p). NoShares says why not
	// and what to use instead when false.
	Shares         bool
	ShareTransport string
	NoShares       string
	// Snapshots: the driver's handles implement Snapshotter (pause,
	// resume, save the memory and device state) and Start takes
	// Spec.Incoming. NoSnapshots says why not when false.
	Snapshots   bool
	NoSnapshots string
	// FreePageReporting: the VMM gives a guest a virtio-balloon that
	// takes its free page reports (Spec.Balloon): memory the guest frees
	// goes back to the host, and a snapshot of it is zeros.
	FreePageReporting bool
	// Verified is false for a driver whose boots were never observed on a
	// real host by this project's tests (doctor says so).
	Verified bool
}

// Limits of every driver: what the guest contract allows whatever the VMM.
const (
	MaxVCPULimit = 32
	MinMemoryMiB = 64
)

// CheckLimits validates vCPU and memory against c, naming the limit.
func (c Capabilities) CheckLimits(vcpu, memMiB int) error {
	if vcpu < 1 || vcpu > c.MaxVCPU {
		return fmt.Errorf("vcpu count %d: this hypervisor allows 1 to %d", vcpu, c.MaxVCPU)
	}
	if memMiB < c.MinMemoryMiB || memMiB > c.MaxMemoryMiB {
		return fmt.Errorf("memory %d MiB: this hypervisor allows %d to %d MiB", memMiB, c.MinMemoryMiB, c.MaxMemoryMiB)
	}
	return nil
}

// Boots reports whether the driver boots kernels of format f.
func (c Capabilities) Boots(f string) bool {
	for _, k := range c.KernelFormats {
		if k == f {
			return true
		}
	}
	return false
}

// ErrNotRunning is returned by Adopt when the recorded VMM process no longer
// exists.
var ErrNotRunning = errors.New("vmm process not running")

// Validate checks the parts of a Spec every driver needs. Drivers call it
// before creating anything, so a bad spec leaves nothing on disk.
func (s Spec) Validate() error {
	if s.Dir == "" || !filepath.IsAbs(s.Dir) {
		return fmt.Errorf("vm dir %q: want an absolute path", s.Dir)
	}
	if s.RuntimeDir == "" || !filepath.IsAbs(s.RuntimeDir) {
		return fmt.Errorf("runtime dir %q: want an absolute path", s.RuntimeDir)
	}
	// The longest socket name drivers use is "agent.sock".
	if n := len(filepath.Join(s.RuntimeDir, "agent.sock")); n > MaxUnixPath {
		return fmt.Errorf("runtime dir %q is too long for unix sockets (%d > %d bytes): use a shorter runtime dir", s.RuntimeDir, n, MaxUnixPath)
	}
	if s.VCPU < 1 || s.VCPU > MaxVCPULimit {
		return fmt.Errorf("vcpu count %d: want 1 to %d", s.VCPU, MaxVCPULimit)
	}
	if s.MemoryMiB < MinMemoryMiB {
		return fmt.Errorf("memory %d MiB: want at least %d MiB", s.MemoryMiB, MinMemoryMiB)
	}
	if s.Initrd != "" {
		if err := regularFile(s.Initrd, "initrd"); err != nil {
			return err
		}
	}
	if len(s.Disks) > 26 {
		return fmt.Errorf("%d disks: at most 26 (vda..vdz)", len(s.Disks))
	}
	for i, d := range s.Disks {
		if err := regularFile(d.Path, "disk "+DiskName(i)); err != nil {
			return err
		}
		// virtio-blk carries at most 20 bytes of serial (VIRTIO_BLK_ID_BYTES).
		if len(d.Serial) > 20 || strings.IndexFunc(d.Serial, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
		}) >= 0 {
			return fmt.Errorf("disk %s serial %q: want at most 20 letters, digits, '-', '_' or '.'", DiskName(i), d.Serial)
		}
	}
	if s.Net != nil && s.Net.Tap != "" {
		if len(s.Net.Tap) > 15 || strings.ContainsAny(s.Net.Tap, " ,=/") {
			return fmt.Errorf("tap name %q: want at most 15 characters, no spaces, commas, '=' or '/'", s.Net.Tap)
		}
		if _, err := net.ParseMAC(s.Net.MAC); err != nil {
			return fmt.Errorf("guest MAC %q: %v", s.Net.MAC, err)
		}
	}
	if len(s.Shares) > MaxShares {
		return fmt.Errorf("%d shares: at most %d", len(s.Shares), MaxShares)
	}
	for _, sh := range s.Shares {
		if !filepath.IsAbs(sh.HostPath) || strings.ContainsAny(sh.HostPath, "\n\x00") {
			return fmt.Errorf("share %s: host path %q: want an absolute path", sh.Tag, sh.HostPath)
		}
		if !guestproto.ValidShareTag(sh.Tag) {
			return fmt.Errorf("share tag %q: want banger0 to banger%d", sh.Tag, MaxShares-1)
		}
	}
	if strings.ContainsAny(s.Cmdline, "\n\x00") {
		return fmt.Errorf("kernel command line %q contains a newline or NUL", s.Cmdline)
	}
	return nil
}

// DiskName is the guest device name of the i-th disk: vda, vdb, ...
func DiskName(i int) string { return "vd" + string(rune('a'+i)) }

func regularFile(path, what string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s %q is not a regular file", what, path)
	}
	return nil
}

// Select picks the driver for pref ("auto" or a driver's name; "" means
// auto). auto takes a usable driver with hardware acceleration first, else
// the first usable one, each in the order given. The string says why.
func Select(pref string, drivers ...Driver) (Driver, string, error) {
	if pref == "" {
		pref = "auto"
	}
	if pref != "auto" {
		for _, d := range drivers {
			if d.Name() != pref {
				continue
			}
			p := d.Probe()
			if !p.Usable {
				return nil, "", fmt.Errorf("vmm %q is not usable here: %s", pref, p.Reason)
			}
			return d, fmt.Sprintf("%s requested (%s)", pref, p.Reason), nil
		}
		return nil, "", fmt.Errorf("unknown vmm %q: want auto or one of %s", pref, strings.Join(Names(drivers), ", "))
	}
	if len(drivers) == 0 {
		return nil, "", errors.New("no vmm drivers configured")
	}
	var why []string
	var first Driver
	for _, d := range drivers {
		p := d.Probe()
		if !p.Usable {
			why = append(why, fmt.Sprintf("%s not usable: %s", d.Name(), p.Reason))
			continue
		}
		note := ""
		if !d.Capabilities().Verified {
			note = ", unverified by banger's tests"
		}
		why = append(why, fmt.Sprintf("%s usable (%s%s)", d.Name(), p.Reason, note))
		if p.Accel == "kvm" {
			return d, strings.Join(why, "; ") + "; picked " + d.Name() + ": hardware accelerated", nil
		}
		if first == nil {
			first = d
		}
	}
	if first == nil {
		return nil, "", fmt.Errorf("no usable vmm: %s", strings.Join(why, "; "))
	}
	return first, strings.Join(why, "; ") + "; picked " + first.Name() + ": no hardware-accelerated driver usable", nil
}

// Names lists the drivers' names.
func Names(drivers []Driver) []string {
	names := make([]string, len(drivers))
	for i, d := range drivers {
		names[i] = d.Name()
	}
	return names
}
