package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"banger/api"
	"banger/client"
)

// newPerNameCmd builds a command that calls do once per name (VMs, images,
// kernels).
func newPerNameCmd(a *app, use, short string, do func(c *client.Client, ctx context.Context, name string) error) *cobra.Command {
	return &cobra.Command{
		Use:   use + " NAME...",
		Short: short,
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return forEachVM(cmd.Context(), args, func(ctx context.Context, name string) error {
				if err := do(a.client(), ctx, name); err != nil {
					return err
				}
				fmt.Println(name)
				return nil
			})
		},
	}
}

// discard adapts a per-name client method to newPerNameCmd, dropping
// its result.
func discard[R any](m func(*client.Client, context.Context, string) (R, error)) func(*client.Client, context.Context, string) error {
	return func(c *client.Client, ctx context.Context, name string) error {
		_, err := m(c, ctx, name)
		return err
	}
}

func newVMStartCmd(a *app) *cobra.Command {
	return newPerNameCmd(a, "start", "Boot stopped VMs", discard((*client.Client).StartVM))
}

func newVMRestartCmd(a *app) *cobra.Command {
	return newPerNameCmd(a, "restart", "Stop and boot VMs again", discard((*client.Client).RestartVM))
}

func newVMPauseCmd(a *app) *cobra.Command {
	return newPerNameCmd(a, "pause", "Stop VMs' vCPUs (memory, devices and connections stay)", discard((*client.Client).PauseVM))
}

func newVMResumeCmd(a *app) *cobra.Command {
	return newPerNameCmd(a, "resume", "Run paused VMs again (returns once each guest's agent answers)", discard((*client.Client).ResumeVM))
}

func newVMStopCmd(a *app) *cobra.Command {
	var force bool
	cmd := newPerNameCmd(a, "stop", "Stop VMs (the guest powers off cleanly; --force kills the VMM)",
		func(c *client.Client, ctx context.Context, name string) error {
			_, err := c.StopVM(ctx, name, force)
			return err
		})
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill the VMM at once")
	return cmd
}

func newVMExecCmd(a *app) *cobra.Command {
	var tty bool
	var ef envFlags // vmenv.go
	cmd := &cobra.Command{
		Use:   "exec NAME [-e KEY=VAL] [-w DIR] [-u USER] -- CMD...",
		Short: "Run a command in a VM over the agent channel (no network needed)",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			entries, err := ef.entries()
			if err != nil {
				return err
			}
			env := sessionEnv(entries, ef.workdir, ef.user)
			var code int
			if tty {
				c, derr := dialGuest(ctx, a, args[0])
				if derr != nil {
					return derr
				}
				defer c.Close()
				code, err = interactive(ctx, c, args[1:], env)
			} else {
				code, err = execInVM(ctx, a, args[0], args[1:], env)
			}
			if err != nil {
				return err
			}
			if code != 0 {
				return &exitError{code: code}
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&tty, "tty", "t", false, "allocate a pty (interactive programs)")
	ef.add(cmd)
	return cmd
}

func newVMSSHCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "ssh NAME [-- CMD...]",
		Short: "SSH into a VM with the system ssh (through the daemon socket; works without DNS setup)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ga, err := getGuestAccess(cmd.Context(), a, args[0])
			if err != nil {
				return err
			}
			info := ga.info
			sshBin, err := exec.LookPath("ssh")
			if err != nil {
				return fmt.Errorf("ssh not found: install openssh-client, or use `banger vm exec %s -- sh`", args[0])
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			argv := []string{"ssh", "-i", ga.keyPath,
				"-o", "UserKnownHostsFile=" + ga.knownHosts, "-o", "StrictHostKeyChecking=accept-new",
				"-o", "HostKeyAlias=" + info.Name + ".vm", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR",
				"-o", fmt.Sprintf("ProxyCommand=%s --socket %s vm proxy %s", self, a.socket, info.Name),
				"root@" + info.Name + ".vm"}
			argv = append(argv, args[1:]...)
			return syscall.Exec(sshBin, argv, os.Environ())
		},
	}
}

func newVMProxyCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:    "proxy NAME",
		Short:  "Pipe stdin/stdout to the VM's SSH server (ssh ProxyCommand)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := a.client().Proxy(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			defer conn.Close()
			done := make(chan struct{}, 2)
			go func() {
				io.Copy(conn, os.Stdin)
				if cw, ok := conn.(interface{ CloseWrite() error }); ok {
					cw.CloseWrite()
				}
				done <- struct{}{}
			}()
			go func() { io.Copy(os.Stdout, conn); done <- struct{}{} }()
			<-done
			return nil
		},
	}
}

func newVMLogsCmd(a *app) *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs NAME",
		Short: "Print a VM's console log (-f follows it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.client().FollowLogs(cmd.Context(), args[0], os.Stdout, follow, 0)
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing as the console grows")
	return cmd
}

func newVMPruneCmd(a *app) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Remove every stopped VM (asks unless -f)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if !force {
				vms, err := a.client().ListVMs(ctx, api.VMListParams{All: true})
				if err != nil {
					return err
				}
				var names []string
				for _, v := range vms {
					if v.State == "stopped" || v.State == "error" || v.State == "created" {
						names = append(names, v.Name)
					}
				}
				if len(names) == 0 {
					fmt.Println("no stopped VMs")
					return nil
				}
				fmt.Fprintf(os.Stderr, "Remove %d stopped VM(s) and their work disks: %s? [y/N] ", len(names), strings.Join(names, ", "))
				ans, _ := bufio.NewReader(os.Stdin).ReadString('\n')
				if a := strings.ToLower(strings.TrimSpace(ans)); a != "y" && a != "yes" {
					return fmt.Errorf("aborted")
				}
			}
			res, err := a.client().PruneVMs(ctx)
			if err != nil {
				return err
			}
			for _, n := range res.Removed {
				fmt.Println(n)
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "do not ask")
	return cmd
}
