package main

import (
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/model"
)

func init() { extraCommands = append(extraCommands, newKernelCmd) }

func newKernelCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "kernel", Short: "Pull, import, list and remove guest kernels"}
	var output string
	pull := &cobra.Command{
		Use:   "pull NAME",
		Short: "Pull a kernel from the catalog (`banger kernel catalog` lists them)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var k model.Kernel
			if err := call(cmd.Context(), api.MethodKernelPull, api.NameParams{Name: args[0]}, &k); err != nil {
				return err
			}
			fmt.Printf("%s %s (%s)\n", k.Name, k.Release, k.Format)
			return nil
		},
	}
	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List pulled kernels",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			var ks []model.Kernel
			if err := call(cmd.Context(), api.MethodKernelList, nil, &ks); err != nil {
				return err
			}
			if output == "json" {
				return printJSON(ks)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tRELEASE\tFORMAT\tSIZE\tSOURCE\tPULLED")
			for _, k := range ks {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k.Name, k.Release, k.Format, model.FormatSize(k.SizeBytes), k.Source, k.PulledAt.UTC().Format("2006-01-02T15:04:05Z"))
			}
			return tw.Flush()
		},
	}
	ls.Flags().StringVarP(&output, "output", "o", "", "output format: table or json")
	rm := &cobra.Command{
		Use:   "rm NAME...",
		Short: "Remove kernels no VM uses",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return forEachVM(cmd.Context(), args, func(ctx contextT, name string) error {
				if err := call(ctx, api.MethodKernelDelete, api.NameParams{Name: name}, nil); err != nil {
					return err
				}
				fmt.Println(name)
				return nil
			})
		},
	}
	var ip api.KernelImportParams
	imp := &cobra.Command{
		Use:   "import --name N --kernel PATH [--initrd PATH] [--modules DIR]",
		Short: "Import a kernel from local files",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, p := range []*string{&ip.Kernel, &ip.Initrd, &ip.Modules} {
				if *p != "" {
					abs, err := absPath(*p)
					if err != nil {
						return err
					}
					*p = abs
				}
			}
			var k model.Kernel
			if err := call(cmd.Context(), api.MethodKernelImport, ip, &k); err != nil {
				return err
			}
			fmt.Printf("%s %s (%s)\n", k.Name, k.Release, k.Format)
			return nil
		},
	}
	imp.Flags().StringVar(&ip.Name, "name", "", "kernel name")
	imp.Flags().StringVar(&ip.Kernel, "kernel", "", "bzImage or vmlinux")
	imp.Flags().StringVar(&ip.Initrd, "initrd", "", "optional initrd")
	imp.Flags().StringVar(&ip.Modules, "modules", "", "optional modules dir (lib/modules/<release>)")
	imp.MarkFlagRequired("name")
	imp.MarkFlagRequired("kernel")
	var catOut string
	cat := &cobra.Command{
		Use:   "catalog",
		Short: "List kernels that can be pulled",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return printCatalog(cmd, api.MethodKernelCatalog, catOut)
		},
	}
	cat.Flags().StringVarP(&catOut, "output", "o", "", "output format: table or json")
	cmd.AddCommand(pull, ls, rm, imp, cat)
	return cmd
}

func printCatalog(cmd *cobra.Command, method, output string) error {
	if err := checkOutput(output); err != nil {
		return err
	}
	var es []api.CatalogEntry
	if err := call(cmd.Context(), method, nil, &es); err != nil {
		return err
	}
	if output == "json" {
		return printJSON(es)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tPULLED\tSOURCE\tDESCRIPTION")
	for _, e := range es {
		name := e.Name
		if e.Default {
			name += " (default)"
		}
		fmt.Fprintf(tw, "%s\t%v\t%s\t%s\n", name, e.Pulled, e.Source, e.Description)
	}
	return tw.Flush()
}
