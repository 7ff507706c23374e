package main

import (
	"context"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"banger/api"
	"banger/internal/model"
)

func newVMSnapshotCmd(a *app) *cobra.Command {
	var name, output string
	cmd := &cobra.Command{
		Use:   "snapshot NAME [--name SNAP]",
		Short: "Save a running VM's memory, devices and disks as a snapshot (the VM is paused only while they are written)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if name != "" {
				if err := model.ValidateVMName(name); err != nil {
					return fmt.Errorf("--name: %w", err)
				}
			}
			sn, err := a.client().SnapshotVM(cmd.Context(), api.VMSnapshotParams{Name: args[0], Snapshot: name})
			if err != nil {
				return err
			}
			if output == "json" || output == "yaml" {
				return printData(output, sn)
			}
			fmt.Println(sn.Name)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "snapshot name (DNS label; default VM-YYYYMMDD-HHMMSS)")
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: table, json or yaml")
	return cmd
}

func newVMForkCmd(a *app) *cobra.Command {
	var p api.VMForkParams
	var output string
	cmd := &cobra.Command{
		Use:   "fork NAME [--name NEW]",
		Short: "Start a new VM from a running VM's current memory, processes and disks, with its own identity (the source runs on)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if p.NewName != "" {
				if err := model.ValidateVMName(p.NewName); err != nil {
					return fmt.Errorf("--name: %w", err)
				}
			}
			p.Name = args[0]
			vm, err := a.client().ForkVM(cmd.Context(), p)
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
	cmd.Flags().StringVar(&p.NewName, "name", "", "the new VM's name (generated if empty)")
	cmd.Flags().BoolVar(&p.NAT, "nat", false, "let the new guest reach beyond the host (NAT)")
	cmd.Flags().StringArrayVarP(&p.Ports, "publish", "p", nil, "forward [HOSTIP:]HOSTPORT:GUESTPORT[/tcp] to the new VM (repeatable)")
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: table, json or yaml")
	return cmd
}

func newSnapshotCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "snapshot", Short: "List, inspect and remove VM snapshots (`banger vm snapshot` takes them)"}
	var lsOut string
	ls := &cobra.Command{
		Use: "ls", Aliases: []string{"list"}, Short: "List snapshots", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(lsOut); err != nil {
				return err
			}
			sns, err := a.client().ListSnapshots(cmd.Context())
			if err != nil {
				return err
			}
			if lsOut == "json" || lsOut == "yaml" {
				return printData(lsOut, sns)
			}
			return printTable(snapshotColumns, sns)
		},
	}
	ls.Flags().StringVarP(&lsOut, "output", "o", "", "output format: table, json or yaml")
	var inOut string
	inspect := &cobra.Command{
		Use: "inspect NAME", Short: "Show one snapshot", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(inOut); err != nil {
				return err
			}
			s, err := a.client().InspectSnapshot(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if inOut == "json" || inOut == "yaml" {
				return printData(inOut, s)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			row := func(k string, v any) { fmt.Fprintf(tw, "%s:\t%v\n", k, v) }
			row("Name", s.Name)
			row("ID", s.ID)
			row("Source VM", fmt.Sprintf("%s (%s)", s.SourceVM, s.SourceVMID))
			row("Image", s.Image)
			row("Kernel", s.Kernel)
			row("vCPU", s.VCPU)
			row("Memory", fmt.Sprintf("%d MiB", s.MemoryMiB))
			row("VMM", s.VMM)
			row("State size", model.FormatSize(s.StateBytes))
			row("Disks on disk", model.FormatSize(s.DiskBytes))
			row("Source paused", time.Duration(s.PausedMs)*time.Millisecond)
			row("Dir", s.Dir)
			row("Created", s.CreatedAt)
			return tw.Flush()
		},
	}
	inspect.Flags().StringVarP(&inOut, "output", "o", "", "output format: table, json or yaml")
	rm := &cobra.Command{
		Use: "rm NAME...", Aliases: []string{"remove", "delete"}, Short: "Remove snapshots", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return forEachVM(cmd.Context(), args, func(ctx context.Context, name string) error {
				if _, err := a.client().RemoveSnapshot(ctx, name); err != nil {
					return err
				}
				fmt.Println(name)
				return nil
			})
		},
	}
	cmd.AddCommand(ls, inspect, rm)
	return cmd
}
