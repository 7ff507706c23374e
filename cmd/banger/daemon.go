package main

import (
	"fmt"
	"os"
	"os/user"
	"strconv"
	"syscall"

	"github.com/spf13/cobra"

	"banger/internal/daemon"
	"banger/internal/vmm"
	"banger/internal/vmm/firecracker"
	"banger/internal/vmm/qemu"
)

func newDaemonCmd(a *app) *cobra.Command {
	var configPath, shareTransport string
	cfg := daemon.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Run the banger daemon (as root)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			final := daemon.DefaultConfig()
			path := configPath
			if path == "" && fileExistsCLI(daemon.DefaultConfigPath) {
				path = daemon.DefaultConfigPath
			}
			if path != "" {
				if err := daemon.LoadConfigFile(&final, path); err != nil {
					return err
				}
			}
			// Flags the user set win over the file.
			fl := cmd.Flags()
			set := func(name string, dst *string, v string) {
				if fl.Changed(name) {
					*dst = v
				}
			}
			set("state-dir", &final.StateDir, cfg.StateDir)
			set("runtime-dir", &final.RuntimeDir, cfg.RuntimeDir)
			set("socket", &final.Socket, a.socket)
			set("log-format", &final.LogFormat, cfg.LogFormat)
			set("bridge-ip", &final.BridgeIP, cfg.BridgeIP)
			set("bridge-name", &final.BridgeName, cfg.BridgeName)
			set("default-image", &final.DefaultImage, cfg.DefaultImage)
			set("default-kernel", &final.DefaultKernel, cfg.DefaultKernel)
			set("vmm", &final.VMM, cfg.VMM)
			set("kernel-catalog", &final.KernelCatalog, cfg.KernelCatalog)
			set("image-catalog", &final.ImageCatalog, cfg.ImageCatalog)
			set("kernel-build-cache", &final.KernelBuildCache, cfg.KernelBuildCache)
			set("apt-mirror", &final.AptMirror, cfg.AptMirror)
			set("ready-timeout", &final.ReadyTimeout, cfg.ReadyTimeout)
			if fl.Changed("warm-start") {
				final.WarmStart = cfg.WarmStart
			}
			if fl.Changed("tcg-tb-size") {
				final.TCGTBSizeMiB = cfg.TCGTBSizeMiB
			}
			if !fl.Changed("socket") && final.Socket == "" && os.Getenv("BANGER_SOCKET") != "" && !fl.Changed("runtime-dir") {
				final.Socket = os.Getenv("BANGER_SOCKET")
			}
			final.Reset, final.Adopt = cfg.Reset, cfg.Adopt
			if final.Reset && final.Adopt {
				return fmt.Errorf("--reset and --adopt exclude each other: --adopt re-imports the VM directories, --reset moves them to lost+found")
			}
			// Everything the daemon writes is private unless it says
			// otherwise (the socket, the runtime dir): state holds work
			// disks, keys and layers from private registries.
			syscall.Umask(0o077)
			d, err := daemon.New(cmd.Context(), final, os.Stderr, daemon.WithDrivers(defaultDrivers(final, shareTransport)...))
			if err != nil {
				return err
			}
			return d.Serve(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "config file (TOML; default "+daemon.DefaultConfigPath+" if present)")
	f.StringVar(&cfg.StateDir, "state-dir", cfg.StateDir, "state directory")
	f.StringVar(&cfg.RuntimeDir, "runtime-dir", cfg.RuntimeDir, "runtime directory (sockets)")
	f.StringVar(&cfg.LogFormat, "log-format", cfg.LogFormat, "log format: text or json")
	f.StringVar(&cfg.BridgeIP, "bridge-ip", cfg.BridgeIP, "bridge address and guest prefix (CIDR)")
	f.StringVar(&cfg.BridgeName, "bridge-name", cfg.BridgeName, "bridge interface name")
	f.StringVar(&cfg.DefaultImage, "default-image", cfg.DefaultImage, "image used when --image is not given")
	f.StringVar(&cfg.DefaultKernel, "default-kernel", "", "kernel for images that use the default (default: debian-cloud-amd64, or the hypervisor's choice: microvm-6.1 on Firecracker)")
	f.StringVar(&cfg.VMM, "vmm", cfg.VMM, "hypervisor: auto, firecracker or qemu")
	f.StringVar(&cfg.KernelCatalog, "kernel-catalog", "", "extra kernel catalog file (JSON)")
	f.StringVar(&cfg.ImageCatalog, "image-catalog", "", "extra image catalog file (JSON)")
	f.StringVar(&shareTransport, "share-transport", "", "how QEMU serves -v shares: virtiofs, 9p, or empty for virtiofs where virtiofsd exists, else 9p")
	f.StringVar(&cfg.KernelBuildCache, "kernel-build-cache", "", "where kernels banger builds (debsrc) are kept, keyed by their inputs (default <state-dir>/kernel-builds)")
	f.StringVar(&cfg.ReadyTimeout, "ready-timeout", "", "how long a boot may take to answer on the agent (default 120s)")
	f.StringVar(&cfg.AptMirror, "apt-mirror", "", "Debian mirror for debootstrap images (default: the host's apt sources)")
	f.BoolVar(&cfg.WarmStart, "warm-start", false, "creates restore a boot snapshot of their shape instead of booting, unless --cold (config warm_start)")
	f.IntVar(&cfg.TCGTBSizeMiB, "tcg-tb-size", 0, "cap of QEMU's TCG translation cache per VM, MiB (0: QEMU's default; config tcg_tb_size_mib)")
	f.BoolVar(&cfg.Reset, "reset", false, "start on a state dir whose banger.db is lost: move its VM directories to lost+found")
	f.BoolVar(&cfg.Adopt, "adopt", false, "start on a state dir whose banger.db is lost: re-import its VM directories (from their vm.json) as stopped VMs")
	return cmd
}

func fileExistsCLI(p string) bool { _, err := os.Stat(p); return err == nil }

// defaultDrivers are the hypervisors `banger daemon` offers, Firecracker
// first: with KVM both are hardware accelerated and Firecracker boots
// leaner; without KVM only QEMU (TCG) is usable.
func defaultDrivers(cfg daemon.Config, shareTransport string) []vmm.Driver {
	// QEMU drops root once its devices are open, to the banger-vmm system
	// user where it exists (scripts/install-deps.sh creates it).
	q := qemu.Options{TBSizeMiB: cfg.TCGTBSizeMiB, ShareTransport: shareTransport}
	if _, err := user.Lookup(qemu.DefaultRunAs); err == nil {
		q.RunAs = qemu.DefaultRunAs
	}
	// Firecracker runs under its jailer where the binary exists, as the
	// same user (nobody where it does not exist: its files stay under the
	// 0700 state dir).
	f := firecracker.Options{JailUID: 65534, JailGID: 65534}
	if u, err := user.Lookup(qemu.DefaultRunAs); err == nil {
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		f.JailUID, f.JailGID = uid, gid
	}
	return []vmm.Driver{firecracker.New(f), qemu.New(q)}
}
