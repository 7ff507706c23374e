// Package guestproto is the contract between the host (daemon, VMM drivers,
// initramfs builder) and banger-init, the guest's PID 1: kernel command line
// keys, agent channel names and ports, and well-known paths inside the guest.
//
// Both sides import this package so that a key renamed on one side cannot
// silently drift from the other.
package guestproto

import (
	"encoding/binary"
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Kernel command line keys banger-init reads.
const (
	KeyIP       = "banger.ip"       // guest address with prefix, e.g. 172.16.0.2/24
	KeyGateway  = "banger.gw"       // default gateway, e.g. 172.16.0.1
	KeyDNS      = "banger.dns"      // comma-separated nameservers
	KeyHostname = "banger.hostname" // DNS-label-safe hostname
	KeyAgent    = "banger.agent"    // AgentVsock or AgentSerial
	KeyInit     = "banger.init"     // InitBanger, InitImage or InitAuto (absent: InitBanger)
	// KeyModules says a modules disk (DevModules) is attached and names the
	// kernel release it was built for: banger-init mounts it read-only at
	// ModulesMountPoint(release) in the final root.
	KeyModules = "banger.modules"
	// KeyTime is the host's wall clock when the command line was written,
	// as unix seconds with up to nine fractional digits
	// (1767225600.123456789). banger-init sets the guest clock to it early
	// if the guest clock is behind it (no RTC, or an RTC that was not set);
	// the daemon corrects the seconds a boot takes with SetTimeRequest once
	// the agent answers.
	KeyTime = "banger.time"
	// KeyShare is one host directory share, repeated per share:
	// TRANSPORT,TAG,MODE,GUESTPATH (virtiofs,banger0,ro,/mnt/src).
	// banger-init mounts each at every boot.
	KeyShare = "banger.share"
)

// Share transports.
const (
	ShareVirtiofs = "virtiofs"
	Share9p       = "9p"
)

// ShareMount is one KeyShare: mount Tag (over Transport) at Path.
type ShareMount struct {
	Transport string
	Tag       string
	ReadOnly  bool
	Path      string
}

var shareTagRE = regexp.MustCompile(`^banger[0-9]$`)

// ValidShareTag reports whether s is a tag banger gives a share
// (banger0 … banger9).
func ValidShareTag(s string) bool { return shareTagRE.MatchString(s) }

// MaxSharePath bounds a guest mount point: the kernel command line is
// 2048 bytes on x86, shared by every argument.
const MaxSharePath = 128

var sharePathRE = regexp.MustCompile(`^(/[A-Za-z0-9._@+-]+)+$`)

// CheckSharePath validates a guest mount point: absolute, clean, at most
// MaxSharePath bytes of letters, digits and ._@+- (it travels on the
// kernel command line), and not / or inside the guest's system mounts.
func CheckSharePath(p string) error {
	if len(p) > MaxSharePath || !sharePathRE.MatchString(p) {
		return fmt.Errorf("guest path %q: want an absolute path of at most %d letters, digits, '/', '.', '_', '@', '+' or '-'", p, MaxSharePath)
	}
	for _, c := range strings.Split(p, "/")[1:] {
		if c == "." || c == ".." {
			return fmt.Errorf("guest path %q: want a clean path (no . or .. components)", p)
		}
	}
	for _, sys := range []string{"/proc", "/sys", "/dev", "/run", "/lib/modules"} {
		if p == sys || strings.HasPrefix(p, sys+"/") {
			return fmt.Errorf("guest path %q: %s belongs to the guest's system; pick another mount point such as /mnt/share", p, sys)
		}
	}
	if p == "/root" {
		return fmt.Errorf("guest path /root is the work disk; pick another mount point such as /root/share or /mnt/share")
	}
	return nil
}

func (m ShareMount) String() string {
	mode := "rw"
	if m.ReadOnly {
		mode = "ro"
	}
	return m.Transport + "," + m.Tag + "," + mode + "," + m.Path
}

func parseShare(v string) (ShareMount, error) {
	f := strings.Split(v, ",")
	if len(f) != 4 {
		return ShareMount{}, fmt.Errorf("want TRANSPORT,TAG,MODE,PATH")
	}
	m := ShareMount{Transport: f[0], Tag: f[1], Path: f[3]}
	if m.Transport != ShareVirtiofs && m.Transport != Share9p {
		return m, fmt.Errorf("transport %q: want %s or %s", f[0], ShareVirtiofs, Share9p)
	}
	if !ValidShareTag(m.Tag) {
		return m, fmt.Errorf("tag %q: want banger0 to banger9", f[1])
	}
	switch f[2] {
	case "ro":
		m.ReadOnly = true
	case "rw":
	default:
		return m, fmt.Errorf("mode %q: want ro or rw", f[2])
	}
	return m, CheckSharePath(m.Path)
}

// Agent transports.
const (
	AgentVsock  = "vsock"
	AgentSerial = "serial"
)

const (
	// AgentVsockPort is the AF_VSOCK port banger-init listens on. Firecracker's
	// hybrid vsock reaches it with "CONNECT 1024\n"; vhost-vsock with
	// (guest CID, 1024).
	AgentVsockPort = 1024

	// AgentSerialName is the virtio-serial port name (virtserialport
	// name=...) banger-init looks up in /sys/class/virtio-ports/*/name.
	AgentSerialName = "banger.agent"

	// PingRequest is an SSH global request banger-init answers with true: a
	// readiness probe that runs nothing in the guest.
	PingRequest = "banger-ping@banger"

	// PoweroffRequest is an SSH global request that makes banger-init shut
	// the guest down cleanly (kill processes, sync, unmount, power off).
	// It is the portable "stop" for every VMM: QEMU microvm's ACPI power
	// button reaches no init, and a serial or vsock channel always exists.
	PoweroffRequest = "banger-poweroff@banger"

	// SetTimeRequest is an SSH global request that sets the guest's wall
	// clock. Its payload is EncodeTime(host time), 8 bytes; banger-init
	// replies true with EncodeTime(its clock before the change), so the host
	// can see how far the guest had drifted. The daemon sends it when the
	// agent first answers, after re-adopting a running VM at restart, and
	// periodically while the VM runs.
	SetTimeRequest = "banger-settime@banger"

	// SSHPort is the TCP port banger-init serves SSH on.
	SSHPort = 22
)

// Block devices in attach order. The VMM must attach the drives in exactly
// this order; banger-init also accepts them by virtio-blk serial
// (SerialRootfs...) when the VMM sets one, which survives any reordering.
const (
	DevRootfs = "vda" // image rootfs, ext4, read-only
	DevCow    = "vdb" // system.cow, ext4 (formatted by the host), overlay upper
	DevWork   = "vdc" // root.ext4, the work disk mounted at /root
	// DevModules is the kernel's modules disk (kernels/<name>/modules.ext4,
	// read-only, shared by every VM of that kernel): the kernel's whole
	// lib/modules/<release> tree with depmod's indexes at the disk's root.
	// Attached after the work disk, and only when the command line carries
	// KeyModules.
	DevModules = "vdd"

	SerialRootfs  = "banger-rootfs"
	SerialCow     = "banger-cow"
	SerialWork    = "banger-work"
	SerialModules = "banger-modules"
)

// Paths inside the initramfs and the guest.
const (
	// ModulesListPath lists, one per line and in load order, the kernel
	// modules banger-init loads (absolute paths inside the initramfs).
	ModulesListPath = "/etc/banger/modules"
	// ModulesDir is where the initramfs carries modules, under their path
	// relative to the kernel directory.
	ModulesDir = "/lib/modules"
	// HostKeyPath is the guest's SSH host key, generated at first boot and
	// kept in the overlay (system.cow), so it survives reboots.
	HostKeyPath = "/etc/banger/ssh_host_ed25519_key"
	// AuthorizedKeysPath is on the work disk, re-read for every connection.
	AuthorizedKeysPath = "/root/.ssh/authorized_keys"
)

// Config is what banger-init learns from the kernel command line.
type Config struct {
	IP       netip.Prefix // invalid (zero) when no network is configured
	Gateway  netip.Addr   // invalid when absent
	DNS      []netip.Addr
	Hostname string
	Agent    string // AgentVsock, AgentSerial or "" (TCP :22 only)
	Init     string // InitBanger, InitImage, InitAuto, or "" (InitBanger)
	// Modules is the kernel release of the attached modules disk
	// (DevModules); "" when none is attached.
	Modules string
	// Time is the host's clock when the command line was written (KeyTime);
	// zero when absent.
	Time time.Time
	// Shares are the host directories to mount, in order.
	Shares []ShareMount
}

// ModulesMountPoint is where banger-init mounts the modules disk, so that
// modprobe, modinfo and the kernel's module autoloader find every module.
func ModulesMountPoint(release string) string { return "/lib/modules/" + release }

var releaseRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+~-]{0,63}$`)

// ValidRelease reports whether s can name a kernel release directory under
// /lib/modules and travel on the command line: one path component of
// letters, digits and ._+~-, at most 64 bytes (the size of uname's release).
func ValidRelease(s string) bool { return releaseRE.MatchString(s) }

var hostnameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ParseCmdline reads banger.* keys from a kernel command line (the content
// of /proc/cmdline). Unknown keys are ignored; a malformed banger.* value is
// an error naming the key and value.
func ParseCmdline(cmdline string) (Config, error) {
	var c Config
	for _, f := range strings.Fields(cmdline) {
		k, v, ok := strings.Cut(f, "=")
		if !ok || !strings.HasPrefix(k, "banger.") {
			continue
		}
		if err := c.set(k, v); err != nil {
			return Config{}, err
		}
	}
	if c.Gateway.IsValid() && !c.IP.IsValid() {
		return Config{}, fmt.Errorf("%s=%s given without %s", KeyGateway, c.Gateway, KeyIP)
	}
	return c, nil
}

func (c *Config) set(k, v string) error {
	switch k {
	case KeyIP:
		p, err := netip.ParsePrefix(v)
		if err != nil || !p.Addr().Is4() {
			return fmt.Errorf("bad %s=%q: want an IPv4 address with prefix length, like 172.16.0.2/24", k, v)
		}
		c.IP = p
	case KeyGateway:
		a, err := netip.ParseAddr(v)
		if err != nil || !a.Is4() {
			return fmt.Errorf("bad %s=%q: want an IPv4 address", k, v)
		}
		c.Gateway = a
	case KeyDNS:
		c.DNS = nil
		for _, s := range strings.Split(v, ",") {
			if s == "" {
				continue
			}
			a, err := netip.ParseAddr(s)
			if err != nil {
				return fmt.Errorf("bad %s=%q: %q is not an IP address", k, v, s)
			}
			c.DNS = append(c.DNS, a)
		}
	case KeyHostname:
		if !hostnameRE.MatchString(v) {
			return fmt.Errorf("bad %s=%q: want a DNS label (lowercase letters, digits, '-')", k, v)
		}
		c.Hostname = v
	case KeyAgent:
		if v != AgentVsock && v != AgentSerial {
			return fmt.Errorf("bad %s=%q: want %q or %q", k, v, AgentVsock, AgentSerial)
		}
		c.Agent = v
	case KeyInit:
		if err := ValidateInitMode(v); err != nil {
			return fmt.Errorf("bad %s=%q: %w", k, v, err)
		}
		c.Init = v
	case KeyTime:
		t, err := parseUnixTime(v)
		if err != nil {
			return fmt.Errorf("bad %s=%q: %v", k, v, err)
		}
		c.Time = t
	case KeyShare:
		m, err := parseShare(v)
		if err != nil {
			return fmt.Errorf("bad %s=%q: %v", k, v, err)
		}
		c.Shares = append(c.Shares, m)
	case KeyModules:
		if !ValidRelease(v) {
			return fmt.Errorf("bad %s=%q: want a kernel release like 6.1.0-27-cloud-amd64 (letters, digits, ._+~-)", k, v)
		}
		c.Modules = v
	}
	return nil
}

// Args renders c as kernel command line arguments, the inverse of
// ParseCmdline. The VMM driver appends them to its own console and clock
// arguments.
func (c Config) Args() []string {
	var a []string
	if c.IP.IsValid() {
		a = append(a, KeyIP+"="+c.IP.String())
	}
	if c.Gateway.IsValid() {
		a = append(a, KeyGateway+"="+c.Gateway.String())
	}
	if len(c.DNS) > 0 {
		s := make([]string, len(c.DNS))
		for i, d := range c.DNS {
			s[i] = d.String()
		}
		a = append(a, KeyDNS+"="+strings.Join(s, ","))
	}
	if c.Hostname != "" {
		a = append(a, KeyHostname+"="+c.Hostname)
	}
	if c.Agent != "" {
		a = append(a, KeyAgent+"="+c.Agent)
	}
	if c.Init != "" {
		a = append(a, KeyInit+"="+c.Init)
	}
	if c.Modules != "" {
		a = append(a, KeyModules+"="+c.Modules)
	}
	if !c.Time.IsZero() {
		a = append(a, KeyTime+"="+FormatUnixTime(c.Time))
	}
	for _, m := range c.Shares {
		a = append(a, KeyShare+"="+m.String())
	}
	return a
}

// Bounds of a clock banger sets: any time a host can plausibly have. They
// keep a corrupt value from moving a guest's clock to 1970 or 2500.
var (
	minClock = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	maxClock = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)
)

func checkClock(t time.Time) error {
	if t.Before(minClock) || !t.Before(maxClock) {
		return fmt.Errorf("%s is outside %d..%d", t.UTC().Format(time.RFC3339), minClock.Year(), maxClock.Year())
	}
	return nil
}

// FormatUnixTime renders t as KeyTime's value: unix seconds, a dot and
// nine digits of nanoseconds.
func FormatUnixTime(t time.Time) string {
	return fmt.Sprintf("%d.%09d", t.Unix(), t.Nanosecond())
}

// parseUnixTime reads FormatUnixTime's output; the fraction may have one
// to nine digits or be absent.
func parseUnixTime(v string) (time.Time, error) {
	sec, frac, hasFrac := strings.Cut(v, ".")
	if sec == "" || len(sec) > 11 || strings.Trim(sec, "0123456789") != "" ||
		hasFrac && (frac == "" || len(frac) > 9 || strings.Trim(frac, "0123456789") != "") {
		return time.Time{}, fmt.Errorf("want unix seconds with up to nine fractional digits, like 1767225600.123456789")
	}
	s, err := strconv.ParseInt(sec, 10, 64)
	if err != nil {
		return time.Time{}, err
	}
	var ns int64
	if hasFrac {
		n, err := strconv.ParseInt(frac+strings.Repeat("0", 9-len(frac)), 10, 64)
		if err != nil {
			return time.Time{}, err
		}
		ns = n
	}
	t := time.Unix(s, ns).UTC()
	if err := checkClock(t); err != nil {
		return time.Time{}, err
	}
	return t, nil
}

// EncodeTime is SetTimeRequest's payload (and reply): t as unix
// nanoseconds, 8 bytes big-endian (an SSH uint64).
func EncodeTime(t time.Time) []byte {
	return binary.BigEndian.AppendUint64(nil, uint64(t.UnixNano()))
}

// DecodeTime reads EncodeTime's bytes. Anything but exactly 8 bytes, or a
// time outside 2000..2200, is an error.
func DecodeTime(b []byte) (time.Time, error) {
	if len(b) != 8 {
		return time.Time{}, fmt.Errorf("time payload is %d bytes, want 8", len(b))
	}
	n := binary.BigEndian.Uint64(b)
	if n > math.MaxInt64 {
		return time.Time{}, fmt.Errorf("time payload %d out of range", n)
	}
	t := time.Unix(0, int64(n)).UTC()
	if err := checkClock(t); err != nil {
		return time.Time{}, err
	}
	return t, nil
}

// Every agent connection (virtio-serial, vsock, Firecracker hybrid vsock
// after its CONNECT/OK) starts with a resynchronization before SSH; TCP :22
// is plain SSH. It exists for the serial channel, one byte stream that
// outlives any host connection: bytes the previous connection left in
// flight (QEMU holds guest output while no host is attached; the guest may
// not yet have seen the host go) would corrupt the next SSH handshake.
// Running it on vsock too keeps one Dial for every transport.
//
//	host:  AgentSync + nonce + "\n"      (repeated until answered)
//	guest: AgentSyncOK + nonce + "\n"    (once per nonce)
//	host:  AgentGo + nonce + "\n"        (once)
//
// then SSH. Each side discards everything else it reads before that point.
// The guest writes nothing between its OK and the host's GO, so the host
// can read in chunks.
const (
	AgentSync   = "BANGER-SYNC "
	AgentSyncOK = "BANGER-SYNC-OK "
	AgentGo     = "BANGER-GO "
)
