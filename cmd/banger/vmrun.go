package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"banger/api"
	"banger/client"
	"banger/internal/model"
)

func newVMRunCmd(a *app) *cobra.Command {
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
			if cf.p.From != "" {
				// The snapshot's processes already run: CMD (or a shell)
				// is only what we attach to.
				cf.p.Foreground, cf.p.Cmd = false, nil
			}
			r := &vmRun{a: a, p: cf.p, rm: rm, argv: args, generated: cf.p.Name == ""}
			return r.run(cmd.Context())
		},
	}
	cf.add(cmd)
	ef.add(cmd)
	pf.add(cmd, false)
	cmd.Flags().BoolVar(&rm, "rm", false, "remove the VM when the command or shell exits, or when banger is interrupted")
	return cmd
}

// vmRun is one `vm run`: create, run the command, then keep or remove the
// VM. A signal (SIGINT, SIGTERM, SIGHUP) at any stage cancels the call in
// flight; with --rm the VM is then removed, without it the user is told
// what was left.
type vmRun struct {
	a    *app
	p    api.VMCreateParams
	rm   bool
	argv []string
	// generated: the CLI picked p.Name (the user gave none), so another
	// name may be tried if it is taken.
	generated bool

	mu sync.Mutex // guards id
	// id is the VM this run's create reserved, from the create's progress
	// (or result); "" while nothing is reserved. Removal goes by id, never
	// by name: a VM of that name may be someone else's.
	id string
}

// cleanupTimeout bounds the removal after the command or a signal.
const cleanupTimeout = 30 * time.Second

func (r *vmRun) run(ctx context.Context) error {
	vm, err := r.create(ctx)
	if err == nil {
		if !r.rm {
			fmt.Fprintf(os.Stderr, "==> VM %s is running (%s); `banger vm rm -f %s` removes it\n", vm.Name, vm.GuestIP, vm.Name)
		}
		err = r.exec(ctx, vm)
	}
	if sig := signalOf(ctx); sig != 0 {
		return r.interrupted(sig)
	}
	if r.rm {
		if rerr := r.remove(); rerr != nil {
			fmt.Fprintf(os.Stderr, "banger: remove VM %s: %v: `banger vm rm -f %s` removes it\n", r.p.Name, rerr, r.p.Name)
		}
	}
	return err
}

// create makes the VM under r.p.Name, picking a fresh name when the CLI
// generated one and it is taken.
func (r *vmRun) create(ctx context.Context) (api.VM, error) {
	if r.generated {
		r.p.Name = model.GenerateVMName()
	}
	for attempt := 0; ; attempt++ {
		vm, err := r.a.client().CreateVM(ctx, r.p, r.progress)
		r.a.finish()
		if err == nil {
			r.setID(vm.ID)
			return vm, nil
		}
		if !r.generated || !api.IsKind(err, api.KindAlreadyExists) || attempt == 3 {
			return vm, err
		}
		r.p.Name = model.GenerateVMName()
	}
}

// progress prints the create's progress and notes the VM it reserved.
func (r *vmRun) progress(p api.Progress) {
	if p.VMID != "" {
		r.setID(p.VMID)
	}
	r.a.client() // makes a.sink
	r.a.sink.Show(p)
}

func (r *vmRun) setID(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.id = id
}

func (r *vmRun) vmID() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.id
}

// exec runs the command, the image's main or a shell (runAttached) and
// turns its status into the error.
func (r *vmRun) exec(ctx context.Context, vm api.VM) error {
	if r.p.From != "" {
		// From a snapshot: its main process runs already; attach to CMD,
		// or a shell.
		vm.Main = nil
		if len(r.argv) > 0 {
			vm.Main = &model.MainProcess{Argv: r.argv}
		}
	}
	code, err := runAttached(ctx, r.a, vm, len(r.argv) > 0)
	if err != nil {
		return err
	}
	if code != 0 {
		return &exitError{code: code}
	}
	return nil
}

// remove force-deletes the VM this run reserved, with a fresh bounded
// context (the command's may be cancelled). Nothing reserved, or a create
// that rolled itself back (the daemon undoes a create whose caller hung
// up before its VMM ran), is success.
func (r *vmRun) remove() error {
	id := r.vmID()
	if id == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	_, err := r.a.client().RemoveVM(ctx, api.VMDeleteParams{Name: id, Force: true})
	if api.IsKind(err, api.KindNotFound) {
		return nil
	}
	return err
}

// interrupted ends a run that sig cut short: with --rm the VM is removed;
// without, the user learns what is left. The exit status is 128+sig.
func (r *vmRun) interrupted(sig syscall.Signal) error {
	switch {
	case r.rm && r.vmID() == "":
		fmt.Fprintf(os.Stderr, "interrupted: VM %s was not created\n", r.p.Name)
	case r.rm:
		if err := r.remove(); err != nil {
			fmt.Fprintf(os.Stderr, "interrupted: could not remove VM %s: %v: `banger vm rm -f %s` removes it\n", r.p.Name, err, r.p.Name)
		} else {
			fmt.Fprintf(os.Stderr, "interrupted: removed VM %s\n", r.p.Name)
		}
	default:
		fmt.Fprintln(os.Stderr, "interrupted: "+r.leftBehind())
	}
	return &exitError{code: 128 + int(sig)}
}

// leftBehind says what an interrupted run without --rm left.
func (r *vmRun) leftBehind() string {
	id := r.vmID()
	if id == "" {
		return fmt.Sprintf("VM %s was not created", r.p.Name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	vm, err := r.settled(ctx, id)
	if api.IsKind(err, api.KindNotFound) {
		return fmt.Sprintf("VM %s was not created", r.p.Name)
	}
	if err != nil {
		return fmt.Sprintf("VM %s may be left: `banger vm rm -f %s` removes it", r.p.Name, r.p.Name)
	}
	return fmt.Sprintf("VM %s is left as it is (state %s): `banger vm rm -f %s` removes it", vm.Name, vm.State, vm.Name)
}

// settled returns the VM once the daemon has finished unwinding the
// cancelled create (it notices the hang-up and stops the boot within
// moments), so the state the user is told is the one that stays.
func (r *vmRun) settled(ctx context.Context, id string) (api.VM, error) {
	for {
		vm, err := r.a.client().InspectVM(ctx, id)
		if err != nil || vm.State != model.StateStarting {
			return vm, err
		}
		select {
		case <-ctx.Done():
			return vm, nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// execInVM runs argv in the guest (a shell when empty) through the daemon's
// proxy to the guest's SSH server, passing stdio and returning the status.
func execInVM(ctx context.Context, a *app, name string, argv []string, env client.ExecOptions) (int, error) {
	c, err := dialGuest(ctx, a, name)
	if err != nil {
		return -1, err
	}
	defer c.Close()
	stdinTTY := term.IsTerminal(int(os.Stdin.Fd()))
	env.Stdout, env.Stderr = os.Stdout, os.Stderr
	if len(argv) == 0 {
		if !stdinTTY {
			env.Stdin = os.Stdin
			return c.Exec(ctx, []string{"exec sh"}, env)
		}
		return interactive(ctx, c, nil, env)
	}
	if !stdinTTY {
		env.Stdin = os.Stdin // like `docker exec` without -i: a terminal is not piped in
	}
	return c.Exec(ctx, argv, env)
}

// interactive runs argv (the login shell when empty) on a pty with the
// local terminal in raw mode.
func interactive(ctx context.Context, c *client.Guest, argv []string, env client.ExecOptions) (int, error) {
	fd := int(os.Stdin.Fd())
	w, h, _ := term.GetSize(fd)
	old, err := term.MakeRaw(fd)
	if err != nil {
		return -1, err
	}
	defer term.Restore(fd, old)
	resize := make(chan client.TermSize, 1)
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	defer signal.Stop(winch)
	go func() {
		for range winch {
			if w, h, err := term.GetSize(fd); err == nil {
				select {
				case resize <- client.TermSize{Cols: w, Rows: h}:
				default:
				}
			}
		}
	}()
	size := client.TermSize{Cols: w, Rows: h}
	t := os.Getenv("TERM")
	env.Stdin, env.Stdout, env.Stderr = os.Stdin, os.Stdout, os.Stderr
	if len(argv) == 0 {
		return c.Shell(ctx, t, size, resize, env)
	}
	return c.ExecPTY(ctx, argv, t, size, resize, env)
}
