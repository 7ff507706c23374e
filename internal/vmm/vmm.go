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
// is vda, then vdb, vdc.
type Disk struct {
	Path     string
	ReadOnly bool
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
	// Cmdline carries the banger.* arguments (guestproto.Config.Args). The
	// driver prepends its own console, reboot and clock arguments.
	Cmdline string

	Disks []Disk
	Net   *NetConfig
	// CID is the guest's vsock context id (>= 3), unique per host.
	CID uint32
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

// Driver is one hypervisor.
type Driver interface {
	Name() string
	Probe() ProbeResult
	Start(ctx context.Context, s Spec) (Handle, error)
	// Adopt re-attaches to a VMM a previous daemon started. It fails with
	// ErrNotRunning when that process is gone (or its pid now names another
	// process).
	Adopt(st StateInfo) (Handle, error)
	// AgentMode is AgentVsock or AgentSerial: the daemon writes it into
	// banger.agent= on the kernel command line.
	AgentMode() string
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
	if s.VCPU < 1 || s.VCPU > 32 {
		return fmt.Errorf("vcpu count %d: want 1 to 32", s.VCPU)
	}
	if s.MemoryMiB < 64 {
		return fmt.Errorf("memory %d MiB: want at least 64 MiB", s.MemoryMiB)
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
	}
	if s.Net != nil && s.Net.Tap != "" {
		if len(s.Net.Tap) > 15 || strings.ContainsAny(s.Net.Tap, " ,=/") {
			return fmt.Errorf("tap name %q: want at most 15 characters, no spaces, commas, '=' or '/'", s.Net.Tap)
		}
		if _, err := net.ParseMAC(s.Net.MAC); err != nil {
			return fmt.Errorf("guest MAC %q: %v", s.Net.MAC, err)
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

// Select picks the driver for pref ("auto", "firecracker", "qemu"; "" means
// auto). auto takes the first usable driver in the order given (the daemon
// passes firecracker first). The string says why that driver was picked.
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
		names := make([]string, len(drivers))
		for i, d := range drivers {
			names[i] = d.Name()
		}
		return nil, "", fmt.Errorf("unknown vmm %q: want auto or one of %s", pref, strings.Join(names, ", "))
	}
	var why []string
	for _, d := range drivers {
		p := d.Probe()
		if p.Usable {
			why = append(why, fmt.Sprintf("%s usable (%s)", d.Name(), p.Reason))
			return d, strings.Join(why, "; "), nil
		}
		why = append(why, fmt.Sprintf("%s not usable: %s", d.Name(), p.Reason))
	}
	if len(drivers) == 0 {
		return nil, "", errors.New("no vmm drivers configured")
	}
	return nil, "", fmt.Errorf("no usable vmm: %s", strings.Join(why, "; "))
}
