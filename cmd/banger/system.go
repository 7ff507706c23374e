package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"banger/api"
	"banger/client"
	"banger/internal/initramfs"
	"banger/internal/model"
	"banger/internal/sysinstall"
)

func newSystemCmd(a *app) *cobra.Command {
	sys := &cobra.Command{
		Use:   "system",
		Short: "Install banger as a system service (systemd unit, banger group) or remove it",
	}
	var o sysinstall.Options
	flags := func(c *cobra.Command) {
		c.Flags().StringVar(&o.Prefix, "prefix", sysinstall.DefaultPrefix, "install binaries to PREFIX/bin/banger and PREFIX/lib/banger/banger-init")
		c.Flags().StringVar(&o.Root, "root", "/", "install into this root directory (an image being prepared): nothing is enabled or started")
	}
	install := &cobra.Command{
		Use:   "install",
		Short: "Install the binaries, the banger group and banger.service; enable and start it where systemd runs (root)",
		Long: `Installs this banger binary and its banger-init to --prefix, creates the
system group banger (members may use the daemon's socket without sudo:
usermod -aG banger USER), and writes /etc/systemd/system/banger.service
(socket /run/banger/banger.sock mode 0660 root:banger, state in
/var/lib/banger, Restart=on-failure). Where systemd runs, the service is
enabled and started (restarted if it ran, to pick up the new binary);
where it does not, the unit is installed but not started, and the daemon
is started by hand.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			exe, err := os.Executable()
			if err == nil {
				exe, err = filepath.EvalSymlinks(exe)
			}
			if err != nil {
				return fmt.Errorf("find this banger binary: %w", err)
			}
			initPath, err := initramfs.LocateInit()
			if err != nil {
				return err
			}
			o.Banger, o.Init, o.Out = exe, initPath, cmd.OutOrStdout()
			return sysinstall.Install(cmd.Context(), o)
		},
	}
	flags(install)
	var purge bool
	uninstall := &cobra.Command{
		Use:   "uninstall",
		Short: "Stop and remove banger.service and the binaries; keep state unless --purge (root)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if purge && o.Root == "/" {
				if err := refuseLiveVMs(cmd.Context(), a); err != nil {
					return err
				}
			}
			o.Out = cmd.OutOrStdout()
			return sysinstall.Uninstall(cmd.Context(), o, purge)
		},
	}
	flags(uninstall)
	uninstall.Flags().BoolVar(&purge, "purge", false, "also remove the state ("+sysinstall.StateDir+": images, VM disks, snapshots), "+sysinstall.ConfigDir+" and the banger group")
	sys.AddCommand(install, uninstall)
	return sys
}

// refuseLiveVMs stops a purge while the daemon reports VMs that run: their
// disks are in the state dir being removed.
func refuseLiveVMs(ctx context.Context, a *app) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	vms, err := client.New(a.socket).ListVMs(ctx, api.VMListParams{All: true})
	if err != nil {
		return nil // no daemon answers: nothing it knows of runs
	}
	var live []string
	for _, v := range vms {
		if v.State != model.StateStopped && v.State != model.StateCreated && v.State != model.StateError {
			live = append(live, v.Name)
		}
	}
	if len(live) > 0 {
		return fmt.Errorf("--purge would delete the disks of VMs that are %s: %s; stop or remove them first (banger vm rm -f %s), nothing was changed",
			"running", strings.Join(live, ", "), strings.Join(live, " "))
	}
	return nil
}
