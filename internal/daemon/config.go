package daemon

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/BurntSushi/toml"

	"banger/internal/instance"
	"banger/internal/kernelcat"
)

// Config is the daemon's configuration. The file (TOML) uses the same keys
// as the flags; flags given on the command line win over the file.
type Config struct {
	StateDir     string `toml:"state_dir"`
	RuntimeDir   string `toml:"runtime_dir"`
	Socket       string `toml:"socket"`
	LogFormat    string `toml:"log_format"`
	BridgeName   string `toml:"bridge_name"`
	BridgeIP     string `toml:"bridge_ip"` // CIDR: the bridge's address and the guest prefix
	DefaultImage string `toml:"default_image"`
	// DefaultKernel replaces the catalog's default kernel
	// (debian-cloud-amd64) for images that ask for the default, ahead of
	// the hypervisor's own choice (e.g. microvm-6.1, the kernel banger
	// builds, where its build tools are installed).
	DefaultKernel string `toml:"default_kernel"`
	VMM           string `toml:"vmm"` // auto or a registered driver's name (checked in New)
	KernelCatalog string `toml:"kernel_catalog"`
	ImageCatalog  string `toml:"image_catalog"`
	// KernelBuildCache keeps kernels banger builds (debsrc catalog
	// entries), keyed by source package version and config hash, so a
	// kernel is built once per host (default <state_dir>/kernel-builds).
	KernelBuildCache string `toml:"kernel_build_cache"`
	AptMirror        string `toml:"apt_mirror"`    // debootstrap mirror; default: the host's apt sources
	ReadyTimeout     string `toml:"ready_timeout"` // how long a boot may take to answer on the agent (default 120s)
	// WarmStart: creates restore the boot snapshot of their shape
	// (warm.go) unless --cold. Off by default: opt in per create with
	// --warm.
	WarmStart bool `toml:"warm_start"`
	// TCGTBSizeMiB caps QEMU's TCG translation cache per VM (MiB; 0:
	// QEMU's default). Read by `banger daemon` when it builds the QEMU
	// driver.
	TCGTBSizeMiB int `toml:"tcg_tb_size_mib"`
	// Reset (flag only) starts on a state dir whose banger.db is gone by
	// moving its VM directories to lost+found.
	Reset bool `toml:"-"`
	// Adopt (flag only) starts on such a state dir by re-importing the VM
	// directories whose manifest (vm.json) it can read, as stopped VMs.
	Adopt bool `toml:"-"`
}

// Defaults.
const (
	DefaultConfigPath = "/etc/banger/config.toml"
	DefaultStateDir   = instance.DefaultStateDir
	DefaultRuntimeDir = "/run/banger"
	DefaultBridgeName = "banger0"
	DefaultBridgeIP   = "172.30.0.1/24"
	DefaultImageName  = "debian-bookworm"
)

// DefaultConfig returns the built-in configuration.
func DefaultConfig() Config {
	return Config{
		StateDir: DefaultStateDir, RuntimeDir: DefaultRuntimeDir, LogFormat: "text",
		BridgeName: DefaultBridgeName, BridgeIP: DefaultBridgeIP, DefaultImage: DefaultImageName, VMM: "auto",
	}
}

// LoadConfigFile overlays the TOML file at path onto c. Unknown keys are
// errors, so a typo does not silently fall back to a default.
func LoadConfigFile(c *Config, path string) error {
	md, err := toml.DecodeFile(path, c)
	if err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return fmt.Errorf("config %s: unknown key %q", path, und[0].String())
	}
	return nil
}

// Finish fills derived defaults and validates.
func (c *Config) Finish() error {
	if c.StateDir == "" || c.RuntimeDir == "" {
		return fmt.Errorf("state dir and runtime dir must not be empty (defaults %s, %s)", DefaultStateDir, DefaultRuntimeDir)
	}
	if c.Socket == "" {
		c.Socket = filepath.Join(c.RuntimeDir, "banger.sock")
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		return fmt.Errorf("invalid log format %q: use text or json", c.LogFormat)
	}
	if c.VMM == "" {
		c.VMM = "auto"
	}
	p, err := netip.ParsePrefix(c.BridgeIP)
	if err != nil || !p.Addr().Is4() || p.Bits() > 30 || p.Addr() == p.Masked().Addr() {
		return fmt.Errorf("invalid bridge_ip %q: want the bridge's IPv4 address with a prefix of /30 or larger, e.g. %s", c.BridgeIP, DefaultBridgeIP)
	}
	if len(c.BridgeName) == 0 || len(c.BridgeName) > 15 {
		return fmt.Errorf("invalid bridge_name %q: 1-15 characters", c.BridgeName)
	}
	if c.ReadyTimeout != "" {
		if d, err := time.ParseDuration(c.ReadyTimeout); err != nil || d <= 0 {
			return fmt.Errorf("invalid ready_timeout %q: want a duration like 90s", c.ReadyTimeout)
		}
	}
	if c.TCGTBSizeMiB < 0 || c.TCGTBSizeMiB > 4096 {
		return fmt.Errorf("invalid tcg_tb_size_mib %d: want 0 (QEMU's default) to 4096", c.TCGTBSizeMiB)
	}
	if c.DefaultKernel != "" {
		if err := kernelcat.ValidateName(c.DefaultKernel); err != nil {
			return fmt.Errorf("invalid default_kernel: %w", err)
		}
	}
	if c.KernelBuildCache == "" {
		c.KernelBuildCache = filepath.Join(c.StateDir, "kernel-builds")
	}
	for _, p := range []*string{&c.StateDir, &c.RuntimeDir, &c.Socket, &c.KernelBuildCache} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		*p = abs
	}
	return nil
}

// BridgePrefix is the parsed bridge_ip.
func (c *Config) BridgePrefix() netip.Prefix { return netip.MustParsePrefix(c.BridgeIP) }

// readyTimeout parses ready_timeout (validated in Finish).
func (c *Config) readyTimeout() time.Duration {
	if c.ReadyTimeout == "" {
		return DefaultReadyTimeout
	}
	d, _ := time.ParseDuration(c.ReadyTimeout)
	return d
}

// DefaultReadyTimeout covers a TCG boot on a loaded 2-core host (5-8 s
// idle) with a wide margin; KVM boots are far below it.
const DefaultReadyTimeout = 120 * time.Second
