package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"text/template"

	"github.com/spf13/cobra"

	"banger/api"
	"banger/internal/model"
)

func newVMCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "vm", Short: "Create, run and manage microVMs"}
	cmd.AddCommand(
		newVMCreateCmd(a), newVMRunCmd(a), newVMListCmd(a), newVMInspectCmd(a), newVMRemoveCmd(a),
		newVMStartCmd(a), newVMStopCmd(a), newVMRestartCmd(a), newVMPauseCmd(a), newVMResumeCmd(a), newVMPruneCmd(a),
		newVMSnapshotCmd(a), newVMForkCmd(a),
		newVMExecCmd(a), newVMSSHCmd(a), newVMProxyCmd(a), newVMLogsCmd(a),
		newVMCpCmd(a), newVMSSHConfigCmd(a), newVMStatsCmd(a),
	)
	return cmd
}

// createFlags are shared by vm create and vm run.
type createFlags struct {
	p      api.VMCreateParams
	labels []string
	prov   provisionFlags
	shares []string
}

func (c *createFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&c.p.Name, "name", "", "VM name (DNS label; generated if empty)")
	f.StringVar(&c.p.Image, "image", "", "image name (default: the daemon's default image)")
	f.StringVar(&c.p.Kernel, "kernel", "", "kernel name (default: the image's kernel)")
	f.IntVar(&c.p.VCPU, "vcpu", 0, fmt.Sprintf("virtual CPUs (default %d)", model.DefaultVCPU))
	f.IntVar(&c.p.MemoryMiB, "memory", 0, fmt.Sprintf("memory in MiB (default %d)", model.DefaultMemoryMiB))
	f.StringVar(&c.p.SystemOverlaySize, "system-overlay-size", "", "size of the copy-on-write system overlay (default "+model.FormatSize(model.DefaultSystemOverlaySize)+")")
	f.StringVar(&c.p.WorkDiskSize, "work-disk-size", "", "size of the persistent work disk at /root (default "+model.FormatSize(model.DefaultWorkDiskSize)+")")
	f.BoolVar(&c.p.NAT, "nat", false, "let the guest reach beyond the host (NAT)")
	f.StringArrayVarP(&c.p.Ports, "publish", "p", nil, "forward [HOSTIP:]HOSTPORT:GUESTPORT[/tcp] (repeatable)")
	f.StringArrayVarP(&c.labels, "label", "l", nil, "tag the VM KEY=VALUE (repeatable; vm ls --filter label=KEY=VALUE)")
	f.StringVar(&c.p.TTL, "ttl", "", "remove the VM this long after its creation (e.g. 30m, 2h), also across daemon restarts")
	f.StringVar(&c.p.IdleStop, "idle-stop", "", "stop the VM after this long with no exec/ssh/port-forward traffic and no guest CPU (e.g. 10m)")
	c.prov.add(cmd)
	f.StringArrayVarP(&c.shares, "volume", "v", nil, "share host directory HOSTDIR at GUESTDIR in the guest, HOSTDIR:GUESTDIR[:ro] (repeatable; QEMU only: virtio-fs, else 9p)")
	f.StringVar(&c.p.From, "from", "", "start from a snapshot (its machine, memory, processes and disks, with a new identity) instead of booting")
	f.BoolVar(&c.p.Warm, "warm", false, "restore the daemon's boot snapshot of this VM's shape instead of booting (taken the first time one boots; the daemon's warm_start makes it the default)")
	f.BoolVar(&c.p.Cold, "cold", false, "boot, even when the daemon's warm_start is on")
}

// validate checks flags locally for a fast, clear error; the daemon checks
// again because any RPC caller may skip the CLI.
func (c *createFlags) validate(cmd *cobra.Command) error {
	// 0 means "the default" on the wire; typed on the command line it is a
	// mistake, not a request for the default.
	for _, f := range []struct {
		flag string
		v    int
	}{{"vcpu", c.p.VCPU}, {"memory", c.p.MemoryMiB}} {
		if cmd.Flags().Changed(f.flag) && f.v <= 0 {
			return fmt.Errorf("invalid --%s %d: must be positive", f.flag, f.v)
		}
	}
	if c.p.Name != "" {
		if err := model.ValidateVMName(c.p.Name); err != nil {
			return err
		}
	}
	if len(c.labels) > 0 {
		c.p.Labels = map[string]string{}
		for _, l := range c.labels {
			k, v := model.ParseLabel(l)
			c.p.Labels[k] = v
		}
		if err := model.ValidateLabels(c.p.Labels); err != nil {
			return fmt.Errorf("--label: %w", err)
		}
	}
	for _, s := range []struct{ flag, v string }{{"--system-overlay-size", c.p.SystemOverlaySize}, {"--work-disk-size", c.p.WorkDiskSize}} {
		if s.v != "" {
			if _, err := model.ParseSize(s.v); err != nil {
				return fmt.Errorf("%s: %w", s.flag, err)
			}
		}
	}
	// A relative HOSTDIR is the CLI's: make it absolute here, where the
	// working directory is known. The daemon resolves it as the caller.
	for _, v := range c.shares {
		if host, rest, ok := strings.Cut(v, ":"); ok && host != "" && !filepath.IsAbs(host) {
			abs, err := filepath.Abs(host)
			if err != nil {
				return fmt.Errorf("-v %s: %w", v, err)
			}
			v = abs + ":" + rest
		}
		if _, err := model.ParseShare(v); err != nil {
			return err
		}
		c.p.Shares = append(c.p.Shares, v)
	}
	return c.prov.load(cmd.Context(), &c.p)
}

func newVMCreateCmd(a *app) *cobra.Command {
	var cf createFlags
	var ef envFlags  // vmenv.go
	var pf procFlags // vmenv.go
	var output string
	cmd := &cobra.Command{
		Use:   "create [flags] [-- CMD...]",
		Short: "Create a VM (and boot it unless --no-start); CMD (or the image's Entrypoint/Cmd) runs as its main process",
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := cf.validate(cmd); err != nil {
				return err
			}
			if err := pf.apply(cmd, &ef, &cf.p, args); err != nil {
				return err
			}
			if err := checkOutput(output); err != nil {
				return err
			}
			vm, err := a.client().CreateVM(cmd.Context(), cf.p, nil)
			if err != nil {
				return err
			}
			if output == "json" || output == "yaml" {
				return printData(output, vm)
			}
			fmt.Println(vm.Name)
			return nil
		},
	}
	cf.add(cmd)
	ef.add(cmd)
	pf.add(cmd, true)
	cmd.Flags().BoolVar(&cf.p.NoStart, "no-start", false, "only reserve the VM; do not boot it")
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: table, json or yaml")
	return cmd
}

func newVMListCmd(a *app) *cobra.Command {
	var all, quiet bool
	var output, format string
	var filters []string
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List running VMs (-a: all)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			vms, err := a.client().ListVMs(cmd.Context(), api.VMListParams{All: all, Filters: filters})
			if err != nil {
				return err
			}
			switch {
			case output == "json" || output == "yaml":
				return printData(output, vms)
			case quiet:
				for _, v := range vms {
					fmt.Println(v.ID)
				}
				return nil
			case format != "":
				return printTemplate(format, vms)
			}
			return printTable(vmColumns, vms)
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "include stopped VMs")
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: table, json or yaml")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print VM ids only")
	cmd.Flags().StringVar(&format, "format", "", "print each VM with a Go template, e.g. '{{.Name}} {{.GuestIP}}' (fields as in -o json)")
	cmd.Flags().StringArrayVarP(&filters, "filter", "f", nil, "only VMs matching label=KEY[=VALUE], state=STATE, image=IMAGE or name=NAME (repeatable: all must match)")
	return cmd
}

// printTemplate prints one line per VM through a Go template whose
// fields are api.VM's (as docker ps --format).
func printTemplate(format string, vms []api.VM) error {
	t, err := template.New("format").Option("missingkey=error").Parse(format)
	if err != nil {
		return fmt.Errorf("--format: %w", err)
	}
	for _, v := range vms {
		var b strings.Builder
		if err := t.Execute(&b, v); err != nil {
			return fmt.Errorf("--format: %w", err)
		}
		fmt.Println(b.String())
	}
	return nil
}

func formatPorts(ps []model.PortForward) string {
	if len(ps) == 0 {
		return "-"
	}
	var out []string
	for _, p := range ps {
		out = append(out, fmt.Sprintf("%s:%d->%d/%s", p.HostIP, p.HostPort, p.GuestPort, p.Protocol))
	}
	return strings.Join(out, ",")
}

func newVMInspectCmd(a *app) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "inspect NAME",
		Short: "Show one VM",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			vm, err := a.client().InspectVM(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if output == "json" || output == "yaml" {
				return printData(output, vm)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			row := func(k string, v any) { fmt.Fprintf(tw, "%s:\t%v\n", k, v) }
			row("Name", vm.Name)
			row("ID", vm.ID)
			row("State", vm.State)
			row("Image", vm.Image)
			row("Kernel", vm.Kernel)
			row("Guest IP", vm.GuestIP)
			row("DNS", vm.DNSName)
			row("vCPU", vm.VCPU)
			row("Memory", fmt.Sprintf("%d MiB", vm.MemoryMiB))
			row("System overlay", model.FormatSize(vm.SystemOverlaySize))
			row("Work disk", model.FormatSize(vm.WorkDiskSize))
			row("NAT", vm.NAT)
			row("Ports", formatPorts(vm.Ports))
			for _, sh := range vm.Shares {
				mode := "rw"
				if sh.ReadOnly {
					mode = "ro"
				}
				tr := sh.Transport
				if tr == "" {
					tr = "not started yet"
				}
				row("Share", fmt.Sprintf("%s -> %s (%s, %s)", sh.Host, sh.Guest, mode, tr))
			}
			if vm.VMM != "" {
				row("VMM", fmt.Sprintf("%s (pid %d)", vm.VMM, vm.PID))
			}
			row("Dir", vm.Dir)
			if vm.Start != "" {
				row("Started", vm.Start+map[string]string{"cold": " (booted)", "warm": " (restored from the boot snapshot of its shape)", "snapshot": " (restored from a snapshot)"}[vm.Start])
			}
			init := vm.Init
			if vm.InitRunning != "" {
				init += " (last boot: " + vm.InitRunning
				if vm.InitPath != "" {
					init += ", /sbin/init is " + vm.InitPath
				}
				init += ")"
			}
			row("Init", init)
			if vm.Main != nil {
				row("Main process", formatMain(vm.Main))
			}
			if vm.MainExitCode != nil {
				row("Main exit code", *vm.MainExitCode)
			}
			if len(vm.Env) > 0 {
				row("Env", strings.Join(vm.Env, " "))
			}
			if vm.LastError != "" {
				row("Last error", vm.LastError)
			}
			if len(vm.Labels) > 0 {
				row("Labels", formatLabels(vm.Labels))
			}
			if vm.ExpiresAt != "" {
				row("Expires", vm.ExpiresAt+" (--ttl)")
			}
			if vm.IdleStop != "" {
				row("Idle stop", vm.IdleStop+" without traffic or guest CPU (--idle-stop)")
			}
			row("Created", vm.CreatedAt)
			return tw.Flush()
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: table, json or yaml")
	return cmd
}

func newVMRemoveCmd(a *app) *cobra.Command {
	var force, withSnaps bool
	var filters []string
	cmd := &cobra.Command{
		Use:     "rm NAME... | rm --filter F...",
		Aliases: []string{"remove", "delete"},
		Short:   "Remove VMs (running ones need -f)",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(filters) == 0 && len(args) == 0 {
				return fmt.Errorf("name a VM, or select VMs with --filter (see vm ls --filter)")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(filters) > 0 {
				vms, err := a.client().ListVMs(cmd.Context(), api.VMListParams{All: true, Filters: filters})
				if err != nil {
					return err
				}
				for _, v := range vms {
					args = append(args, v.ID)
				}
				if len(args) == 0 {
					return nil // nothing matched: nothing to remove
				}
			}
			return forEachVM(cmd.Context(), args, func(ctx context.Context, name string) error {
				if _, err := a.client().RemoveVM(ctx, api.VMDeleteParams{Name: name, Force: force, WithSnapshots: withSnaps}); err != nil {
					return err
				}
				fmt.Println(name)
				return nil
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "stop running VMs first")
	cmd.Flags().StringArrayVar(&filters, "filter", nil, "remove the VMs matching these filters too (as vm ls --filter)")
	cmd.Flags().BoolVar(&withSnaps, "with-snapshots", false, "also remove the VMs' snapshots (kept by default)")
	return cmd
}

// forEachVM applies fn to each name, reporting every failure and returning
// an error if any failed (docker rm semantics: keep going).
func forEachVM(ctx context.Context, names []string, fn func(context.Context, string) error) error {
	var failed []string
	var last error
	for _, n := range names {
		if err := fn(ctx, n); err != nil {
			var ue *api.UnreachableError
			if errors.As(err, &ue) {
				return err
			}
			fmt.Fprintf(os.Stderr, "banger: %s: %v\n", n, err)
			failed = append(failed, n)
			last = err
		}
	}
	if len(failed) == 1 && len(names) == 1 {
		return &exitError{code: exitCodeFor(last)}
	}
	if len(failed) > 0 {
		return fmt.Errorf("failed: %s", strings.Join(failed, ", "))
	}
	return nil
}

func exitCodeFor(err error) int {
	if api.IsKind(err, api.KindInvalidArgument) {
		return 2
	}
	return 1
}
