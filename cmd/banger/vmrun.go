package main

import (
	"context"
	"fmt"
	"io"
	"os"
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

func newVMRunCmd(a *app) *cobra.Command {
	var cf createFlags
	var rm bool
	cmd := &cobra.Command{
		Use:   "run [create flags] [--rm] [-- CMD...]",
		Short: "Create and boot a VM, then open a shell or run CMD in it",
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := cf.validate(cmd); err != nil {
				return err
			}
			ctx := cmd.Context()
			var vm api.VM
			if err := a.call(ctx, api.MethodVMCreate, cf.p, &vm); err != nil {
				return err
			}
			if rm {
				defer func() {
					// Remove even if the user pressed ^C.
					a.call(context.Background(), api.MethodVMDelete, api.VMDeleteParams{Name: vm.Name, Force: true}, nil)
				}()
			} else {
				fmt.Fprintf(os.Stderr, "==> VM %s is running (%s); `banger vm rm -f %s` removes it\n", vm.Name, vm.GuestIP, vm.Name)
			}
			code, err := execInVM(ctx, a, vm.Name, args)
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
	cmd.Flags().BoolVar(&rm, "rm", false, "remove the VM when the command or shell exits")
	return cmd
}

// execInVM runs argv in the guest (a shell when empty) through the daemon's
// proxy to the guest's SSH server, passing stdio and returning the status.
func execInVM(ctx context.Context, a *app, name string, argv []string) (int, error) {
	c, err := dialGuest(ctx, a, name)
	if err != nil {
		return -1, err
	}
	defer c.Close()
	stdinTTY := term.IsTerminal(int(os.Stdin.Fd()))
	if len(argv) == 0 {
		if !stdinTTY {
			return c.Exec(ctx, "exec sh", nil, os.Stdin, os.Stdout, os.Stderr)
		}
		return interactive(ctx, c, "")
	}
	cmdline := shellQuote(argv)
	var stdin io.Reader = os.Stdin
	if stdinTTY {
		stdin = nil // like `docker exec` without -i: a terminal is not piped in
	}
	return c.Exec(ctx, cmdline, nil, stdin, os.Stdout, os.Stderr)
}

func interactive(ctx context.Context, c *agent.Client, cmdline string) (int, error) {
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
		return c.Shell(ctx, t, size, resize, nil, os.Stdin, os.Stdout, os.Stderr)
	}
	return c.ExecPTY(ctx, cmdline, t, size, resize, nil, os.Stdin, os.Stdout)
}

// dialGuest opens an SSH client to the guest over the daemon socket.
func dialGuest(ctx context.Context, a *app, name string) (*agent.Client, error) {
	var info api.SSHInfo
	if err := a.call(ctx, api.MethodVMSSHInfo, api.NameParams{Name: name}, &info); err != nil {
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
	conn, err := a.client().Stream(ctx, api.MethodVMProxy, api.NameParams{Name: name})
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
