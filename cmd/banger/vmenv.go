package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"banger/api"
	"banger/client"
	"banger/internal/guestproto"
	"banger/internal/model"
	"banger/internal/shellquote"
)

// envFlags are the process environment flags of vm exec, vm run and vm
// create: -e KEY=VAL, --env-file, -w/--workdir, -u/--user.
type envFlags struct {
	env      []string
	envFiles []string
	workdir  string
	user     string
}

func (f *envFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringArrayVarP(&f.env, "env", "e", nil, "set KEY=VAL in the environment (KEY alone: its value here) (repeatable)")
	fl.StringArrayVar(&f.envFiles, "env-file", nil, "read KEY=VAL lines from a file (# comments) (repeatable)")
	fl.StringVarP(&f.workdir, "workdir", "w", "", "working directory in the guest (absolute)")
	fl.StringVarP(&f.user, "user", "u", "", "run as USER[:GROUP] (names or ids from the guest's /etc/passwd)")
}

// entries returns the KEY=VALUE list: env files first, then -e, in order
// (later wins).
func (f *envFlags) entries() ([]string, error) {
	var out []string
	for _, path := range f.envFiles {
		kvs, err := readEnvFile(path)
		if err != nil {
			return nil, err
		}
		out = append(out, kvs...)
	}
	for _, e := range f.env {
		kv, err := envEntry(e)
		if err != nil {
			return nil, fmt.Errorf("-e %s", err)
		}
		out = append(out, kv)
	}
	if err := guestproto.ValidateEnv(out); err != nil {
		return nil, err
	}
	if err := guestproto.ValidateWorkdir(f.workdir); err != nil {
		return nil, fmt.Errorf("--workdir: %w", err)
	}
	if err := guestproto.ValidateUser(f.user); err != nil {
		return nil, fmt.Errorf("--user: %w", err)
	}
	return out, nil
}

// envEntry turns "KEY=VAL" into itself and "KEY" into KEY=<local value>,
// as docker does.
func envEntry(e string) (string, error) {
	k, _, ok := strings.Cut(e, "=")
	if err := guestproto.ValidateEnvName(k); err != nil {
		return "", err
	}
	if ok {
		return e, nil
	}
	return k + "=" + os.Getenv(k), nil
}

func readEnvFile(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--env-file: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), guestproto.MaxEnvValueBytes+guestproto.MaxEnvNameBytes+1)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		kv, err := envEntry(line)
		if err != nil {
			return nil, fmt.Errorf("--env-file %s:%d: %w", path, n, err)
		}
		out = append(out, kv)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("--env-file %s: %w", path, err)
	}
	return out, nil
}

// sessionEnv is one SSH session's settings: the entries (KEY=VALUE), the
// workdir and the user.
func sessionEnv(env []string, workdir, user string) client.ExecOptions {
	o := client.ExecOptions{WorkingDir: workdir, User: user}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		if o.Env == nil {
			o.Env = map[string]string{}
		}
		o.Env[k] = v
	}
	return o
}

// procFlags are vm create's and vm run's main process flags.
type procFlags struct {
	init       string
	restart    string
	entrypoint string
}

func (f *procFlags) add(cmd *cobra.Command, create bool) {
	fl := cmd.Flags()
	fl.StringVar(&f.init, "init", "", "PID 1 of the guest: auto (the image's own init when it is systemd or another service manager), banger, or image (default: the image's, else auto)")
	fl.StringVar(&f.entrypoint, "entrypoint", "", "override the image's Entrypoint (\"\" clears it)")
	if create {
		fl.StringVar(&f.restart, "restart", "", "main process restart policy: no (its exit stops the VM), on-failure, always (default no)")
	}
}

// apply puts the flags and the command after `--` into the create params.
func (f *procFlags) apply(cmd *cobra.Command, ef *envFlags, p *api.VMCreateParams, args []string) error {
	env, err := ef.entries()
	if err != nil {
		return err
	}
	if f.init != "" {
		if err := guestproto.ValidateInitMode(f.init); err != nil {
			return fmt.Errorf("--init: %w", err)
		}
	}
	if err := guestproto.ValidateRestart(f.restart); err != nil {
		return fmt.Errorf("--restart: %w", err)
	}
	p.Init, p.Restart, p.Env, p.WorkingDir, p.User, p.Cmd = f.init, f.restart, env, ef.workdir, ef.user, args
	if cmd.Flags().Changed("entrypoint") {
		ep := []string{}
		if f.entrypoint != "" {
			ep = []string{f.entrypoint}
		}
		p.Entrypoint = &ep
	}
	return nil
}

func formatMain(m *model.MainProcess) string {
	s := shellquote.Join(m.Argv)
	if len(m.Argv) == 1 {
		s = m.Argv[0]
	}
	if m.Attached {
		return s + " (run attached by `vm run`)"
	}
	extra := []string{"restart " + m.Restart}
	if m.User != "" {
		extra = append(extra, "user "+m.User)
	}
	if m.WorkingDir != "" {
		extra = append(extra, "in "+m.WorkingDir)
	}
	return s + " (" + strings.Join(extra, ", ") + ")"
}

// runAttached is `vm run`'s foreground part: the VM's attached main (the
// image's Entrypoint+Cmd or the given command) with its working directory
// and user, or, when that is a bare shell and no command was given, the
// interactive login shell as before. The VM's env (image Env and -e)
// already applies to every session in the guest.
func runAttached(ctx context.Context, a *app, vm api.VM, explicit bool) (int, error) {
	m := vm.Main
	if m == nil || !explicit && guestproto.IsShell(m.Argv) {
		var env client.ExecOptions
		if m != nil {
			env = sessionEnv(nil, m.WorkingDir, m.User)
		}
		return execInVM(ctx, a, vm.Name, nil, env)
	}
	env := sessionEnv(nil, m.WorkingDir, m.User)
	if !explicit && term.IsTerminal(int(os.Stdin.Fd())) {
		// docker run -it: the entrypoint gets the terminal.
		c, err := dialGuest(ctx, a, vm.Name)
		if err != nil {
			return -1, err
		}
		defer c.Close()
		return interactive(ctx, c, m.Argv, env)
	}
	return execInVM(ctx, a, vm.Name, m.Argv, env)
}
