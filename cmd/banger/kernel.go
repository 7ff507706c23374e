package main

import (
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/model"
)

func newKernelCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "kernel", Short: "Pull, import, list and remove guest kernels"}
	var pullOut, impOut string
	pull := &cobra.Command{
		Use:   "pull NAME",
		Short: "Pull a kernel from the catalog (`banger kernel catalog` lists them)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(pullOut); err != nil {
				return err
			}
			var k api.Kernel
			if err := a.call(cmd.Context(), api.MethodKernelPull, api.NameParams{Name: args[0]}, &k); err != nil {
				return err
			}
			return printKernel(k, pullOut)
		},
	}
	pull.Flags().StringVarP(&pullOut, "output", "o", "", "output format: table or json (progress: JSON lines on stderr)")
	ls := newListCmd(a, "List pulled kernels", api.MethodKernelList, "NAME\tRELEASE\tFORMAT\tSIZE\tSOURCE\tPULLED",
		func(k api.Kernel) string {
			return fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s", k.Name, k.Release, k.Format, model.FormatSize(k.SizeBytes), k.Source, k.PulledAt.UTC().Format("2006-01-02T15:04:05Z"))
		})
	rm := newPerNameCmd(a, "rm", "Remove kernels no VM uses", api.MethodKernelDelete, nameParams)
	var ip api.KernelImportParams
	imp := &cobra.Command{
		Use:   "import --name N --kernel PATH [--initrd PATH] [--modules DIR]",
		Short: "Import a kernel from local files",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(impOut); err != nil {
				return err
			}
			for _, p := range []*string{&ip.Kernel, &ip.Initrd, &ip.Modules} {
				if *p != "" {
					abs, err := absPath(*p)
					if err != nil {
						return err
					}
					*p = abs
				}
			}
			var k api.Kernel
			if err := a.call(cmd.Context(), api.MethodKernelImport, ip, &k); err != nil {
				return err
			}
			return printKernel(k, impOut)
		},
	}
	imp.Flags().StringVarP(&impOut, "output", "o", "", "output format: table or json (progress: JSON lines on stderr)")
	imp.Flags().StringVar(&ip.Name, "name", "", "kernel name")
	imp.Flags().StringVar(&ip.Kernel, "kernel", "", "bzImage or vmlinux")
	imp.Flags().StringVar(&ip.Initrd, "initrd", "", "optional initrd")
	imp.Flags().StringVar(&ip.Modules, "modules", "", "optional modules dir (lib/modules/<release>)")
	imp.MarkFlagRequired("name")
	imp.MarkFlagRequired("kernel")
	cat := newCatalogCmd(a, "List kernels that can be pulled", api.MethodKernelCatalog)
	cmd.AddCommand(pull, ls, rm, imp, cat)
	return cmd
}

// newCatalogCmd lists what a catalog offers and whether it is pulled.
func newCatalogCmd(a *app, short, method string) *cobra.Command {
	cmd := newListCmd(a, short, method, "NAME\tPULLED\tSOURCE\tDESCRIPTION", func(e api.CatalogEntry) string {
		name := e.Name
		if e.Default {
			name += " (default)"
		}
		return fmt.Sprintf("%s\t%v\t%s\t%s", name, e.Pulled, e.Source, e.Description)
	})
	cmd.Use, cmd.Aliases = "catalog", nil
	return cmd
}

// newListCmd builds an `ls` command: it calls method (no params) for a
// list of T and prints it as JSON (-o json) or a table of header and row.
func newListCmd[T any](a *app, short, method, header string, row func(T) string) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   short,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			var items []T
			if err := a.call(cmd.Context(), method, nil, &items); err != nil {
				return err
			}
			if output == "json" {
				return printJSON(items)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, header)
			for _, it := range items {
				fmt.Fprintln(tw, row(it))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: table or json")
	return cmd
}

// printKernel prints a pulled or imported kernel, or JSON.
func printKernel(k api.Kernel, output string) error {
	if output == "json" {
		return printJSON(k)
	}
	fmt.Printf("%s %s (%s)\n", k.Name, k.Release, k.Format)
	return nil
}
