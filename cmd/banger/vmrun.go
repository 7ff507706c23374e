package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"
	"golang.org/x/term"

	"banger/internal/agent"
	"banger/internal/api"
)

func init() {
	extraVMCommands = append(extraVMCommands, newVMRunCmd, newVMStartCmd, newVMStopCmd, newVMRestartCmd,
		newVMExecCmd, newVMSSHCmd, newVMLogsCmd, newVMPruneCmd, newVMProxyCmd)
}

func newVMRunCmd() *cobra.Command {
	var cf createFlags
	var ef envFlags  // vmenv.go
	var pf procFlags // vmenv.go
	var rm bool
	cmd := &cobra.Command{
		Use:   "run [create flags] [--rm] [-- CMD...]",
		Short: "Create and boot a VM, then run the image's Entrypoint/Cmd (or CMD) attached, or open a shell",
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := cf.validate(cmd); err != nil {
				return err
			}
			if err := pf.apply(cmd, &ef, &cf.p, args); err != nil {
				return err
			}
			cf.p.Foreground = true // we run the command attached, not banger-init
			ctx := cmd.Context()
			var vm api.VM
			if err := call(ctx, api.MethodVMCreate, cf.p, &vm); err != nil {
				return err
			}
			if rm {
				defer func() {
					// Remove even if the user pressed ^C.
					call(context.Background(), api.MethodVMDelete, api.VMDeleteParams{Name: vm.Name, Force: true}, nil)
				}()
			} else {
				fmt.Fprintf(os.Stderr, "==> VM %s is running (%s); `banger vm rm -f %s` removes it\n", vm.Name, vm.GuestIP, vm.Name)
			}
			code, err := runAttached(ctx, vm, len(args) > 0)
			if err != nil {
				return err
			}
			if code != 0 {
				return &exitError{code: code}
			}
			return nil
		},
	}
	cf.add(cmd)
	ef.add(cmd)
	pf.add(cmd, false)
	cmd.Flags().BoolVar(&rm, "rm", false, "remove the VM when the command or shell exits")
	return cmd
}

// execInVM runs argv in the guest (a shell when empty) through the daemon's
// proxy to the guest's SSH server, passing stdio and returning the status.
func execInVM(ctx context.Context, name string, argv []string, env map[string]string) (int, error) {
	c, err := dialGuest(ctx, name)
	if err != nil {
		return -1, err
	}
	defer c.Close()
	stdinTTY := term.IsTerminal(int(os.Stdin.Fd()))
	if len(argv) == 0 {
		if !stdinTTY {
			return c.Exec(ctx, "exec sh", env, os.Stdin, os.Stdout, os.Stderr)
		}
		return interactive(ctx, c, "", env)
	}
	cmdline := shellQuote(argv)
	var stdin io.Reader = os.Stdin
	if stdinTTY {
		stdin = nil // like `docker exec` without -i: a terminal is not piped in
	}
	return c.Exec(ctx, cmdline, env, stdin, os.Stdout, os.Stderr)
}

func interactive(ctx context.Context, c *agent.Client, cmdline string, env map[string]string) (int, error) {
	fd := int(os.Stdin.Fd())
	w, h, _ := term.GetSize(fd)
	old, err := term.MakeRaw(fd)
	if err != nil {
		return -1, err
	}
	defer term.Restore(fd, old)
	resize := make(chan agent.TermSize, 1)
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	defer signal.Stop(winch)
	go func() {
		for range winch {
			if w, h, err := term.GetSize(fd); err == nil {
				select {
				case resize <- agent.TermSize{Cols: w, Rows: h}:
				default:
				}
			}
		}
	}()
	size := agent.TermSize{Cols: w, Rows: h}
	t := os.Getenv("TERM")
	if cmdline == "" {
		return c.Shell(ctx, t, size, resize, env, os.Stdin, os.Stdout, os.Stderr)
	}
	return c.ExecPTY(ctx, cmdline, t, size, resize, env, os.Stdin, os.Stdout)
}

// dialGuest opens an SSH client to the guest over the daemon socket.
func dialGuest(ctx context.Context, name string) (*agent.Client, error) {
	var info api.SSHInfo
	if err := call(ctx, api.MethodVMSSHInfo, api.NameParams{Name: name}, &info); err != nil {
		return nil, err
	}
	key, err := os.ReadFile(info.KeyPath)
	if err != nil {
		return nil, fmt.Errorf("read the daemon's SSH key: %w (run as root, or as a member of the banger group)", err)
	}
	signer, err := ssh.ParsePrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", info.KeyPath, err)
	}
	conn, err := client().Stream(ctx, api.MethodVMProxy, api.NameParams{Name: name})
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, err := agent.DialSSH(dctx, conn, signer, agent.TOFU(info.KnownHosts, info.Name, info.GuestIP, info.Name+".vm"))
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("SSH to %s: %w", name, err)
	}
	return c, nil
}

func shellQuote(argv []string) string {
	if len(argv) == 1 {
		return argv[0]
	}
	q := make([]string, len(argv))
	for i, a := range argv {
		safe := a != ""
		for _, r := range a {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,@%+", r)) {
				safe = false
				break
			}
		}
		if safe {
			q[i] = a
		} else {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(q, " ")
}

// newPerNameCmd builds a command that calls method once per name (VMs,
// images, kernels);
// params makes each call's params (flags bound by addFlags).
func newPerNameCmd(use, short, method string, params func(name string) any, addFlags func(*cobra.Command)) func() *cobra.Command {
	return func() *cobra.Command {
		cmd := &cobra.Command{
			Use:   use + " NAME...",
			Short: short,
			Args:  cobra.MinimumNArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return forEachVM(cmd.Context(), args, func(ctx contextT, name string) error {
					if err := call(ctx, method, params(name), nil); err != nil {
						return err
					}
					fmt.Println(name)
					return nil
				})
			},
		}
		if addFlags != nil {
			addFlags(cmd)
		}
		return cmd
	}
}

func nameParams(name string) any { return api.NameParams{Name: name} }

var stopForce bool

var (
	newVMStartCmd   = newPerNameCmd("start", "Boot stopped VMs", api.MethodVMStart, nameParams, nil)
	newVMRestartCmd = newPerNameCmd("restart", "Stop and boot VMs again", api.MethodVMRestart, nameParams, nil)
	newVMStopCmd    = newPerNameCmd("stop", "Stop VMs (the guest powers off cleanly; --force kills the VMM)", api.MethodVMStop,
		func(name string) any { return api.VMStopParams{Name: name, Force: stopForce} },
		func(c *cobra.Command) { c.Flags().BoolVarP(&stopForce, "force", "f", false, "kill the VMM at once") })
)

func newVMExecCmd() *cobra.Command {
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
				c, derr := dialGuest(ctx, args[0])
				if derr != nil {
					return derr
				}
				defer c.Close()
				code, err = interactive(ctx, c, shellQuote(args[1:]), env)
			} else {
				code, err = execInVM(ctx, args[0], args[1:], env)
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

func newVMSSHCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "ssh NAME [-- CMD...]",
		Short: "SSH into a VM with the system ssh (through the daemon socket; works without DNS setup)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var info api.SSHInfo
			if err := call(cmd.Context(), api.MethodVMSSHInfo, api.NameParams{Name: args[0]}, &info); err != nil {
				return err
			}
			sshBin, err := exec.LookPath("ssh")
			if err != nil {
				return fmt.Errorf("ssh not found: install openssh-client, or use `banger vm exec %s -- sh`", args[0])
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			argv := []string{"ssh", "-i", info.KeyPath,
				"-o", "UserKnownHostsFile=" + info.KnownHosts, "-o", "StrictHostKeyChecking=accept-new",
				"-o", "HostKeyAlias=" + info.Name + ".vm", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR",
				"-o", fmt.Sprintf("ProxyCommand=%s --socket %s vm proxy %s", self, socketFlag, info.Name),
				"root@" + info.Name + ".vm"}
			argv = append(argv, args[1:]...)
			return syscall.Exec(sshBin, argv, os.Environ())
		},
	}
}

func newVMProxyCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "proxy NAME",
		Short:  "Pipe stdin/stdout to the VM's SSH server (ssh ProxyCommand)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := client().Stream(cmd.Context(), api.MethodVMProxy, api.NameParams{Name: args[0]})
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

func newVMLogsCmd() *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs NAME",
		Short: "Print a VM's console log (-f follows it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			var off int64
			for {
				var res api.LogsResult
				if err := call(ctx, api.MethodVMLogs, api.LogsParams{Name: args[0], Offset: off}, &res); err != nil {
					return err
				}
				os.Stdout.WriteString(res.Data)
				off = res.Offset
				if !follow {
					return nil
				}
				if res.Data == "" && res.State != "running" && res.State != "starting" && res.State != "stopping" {
					return nil
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(500 * time.Millisecond):
				}
			}
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing as the console grows")
	return cmd
}

func newVMPruneCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Remove every stopped VM (asks unless -f)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if !force {
				var vms []api.VM
				if err := call(ctx, api.MethodVMList, api.VMListParams{All: true}, &vms); err != nil {
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
			var res api.VMPruneResult
			if err := call(ctx, api.MethodVMPrune, nil, &res); err != nil {
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
