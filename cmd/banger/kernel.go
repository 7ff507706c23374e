package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"banger/api"
	"banger/client"
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
			k, err := a.client().PullKernel(cmd.Context(), args[0], nil)
			a.finish()
			if err != nil {
				return err
			}
			return printKernel(k, pullOut)
		},
	}
	ls := newListCmd(a, "List pulled kernels", (*client.Client).ListKernels, kernelColumns)
	rm := newPerNameCmd(a, "rm", "Remove kernels no VM uses", discard((*client.Client).RemoveKernel))
	pull.Flags().StringVarP(&pullOut, "output", "o", "", "output format: table or json (progress: JSON lines on stderr)")
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
			k, err := a.client().ImportKernel(cmd.Context(), ip, nil)
			a.finish()
			if err != nil {
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
	cat := newCatalogCmd(a, "List kernels that can be pulled", (*client.Client).KernelCatalog)
	cmd.AddCommand(pull, ls, rm, imp, cat)
	return cmd
}

// newCatalogCmd lists what a catalog offers and whether it is pulled.
func newCatalogCmd(a *app, short string, list func(*client.Client, context.Context) ([]api.CatalogEntry, error)) *cobra.Command {
	cmd := newListCmd(a, short, list, catalogColumns)
	cmd.Use, cmd.Aliases = "catalog", nil
	return cmd
}

// newListCmd builds an `ls` command: it calls list for a list of T and
// prints it as JSON (-o json), YAML (-o yaml) or a table of cols.
func newListCmd[T any](a *app, short string, list func(*client.Client, context.Context) ([]T, error), cols []column[T]) *cobra.Command {
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
			items, err := list(a.client(), cmd.Context())
			if err != nil {
				return err
			}
			if output == "json" || output == "yaml" {
				return printData(output, items)
			}
			return printTable(cols, items)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: table, json or yaml")
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
