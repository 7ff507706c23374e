package main

import (
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/model"
)

func newDNSCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "dns", Short: "Resolve <name>.vm on the host through systemd-resolved"}
	for _, v := range []struct{ use, short, method string }{
		{"setup", "resolvectl dns <bridge> <bridge-ip>; resolvectl domain <bridge> ~vm", api.MethodDNSSetup},
		{"teardown", "resolvectl revert <bridge>", api.MethodDNSTeardown},
	} {
		v := v
		cmd.AddCommand(&cobra.Command{
			Use: v.use, Short: v.short, Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				var res api.DNSResult
				if err := a.call(cmd.Context(), v.method, nil, &res); err != nil {
					return err
				}
				fmt.Printf("%s: bridge %s, dns %s, domain %s\n", v.use, res.Bridge, res.DNS, res.Domain)
				return nil
			},
		})
	}
	return cmd
}

func newImageCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "image", Short: "Pull, import, list and remove images"}
	var pullName, pullOut, impOut string
	pull := &cobra.Command{
		Use:   "pull REF",
		Short: "Pull an image from a registry (or build a catalog image)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(pullOut); err != nil {
				return err
			}
			var img api.Image
			if err := a.call(cmd.Context(), api.MethodImagePull, api.ImagePullParams{Ref: args[0], Name: pullName}, &img); err != nil {
				return err
			}
			return printImage(img, pullOut)
		},
	}
	pull.Flags().StringVar(&pullName, "name", "", "local name (default: REF)")
	pull.Flags().StringVarP(&pullOut, "output", "o", "", "output format: table or json (progress: JSON lines on stderr)")
	var ip api.ImageImportParams
	imp := &cobra.Command{
		Use:   "import PATH --name N",
		Short: "Import an OCI image layout directory or a `docker save` tarball",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(impOut); err != nil {
				return err
			}
			abs, err := absPath(args[0])
			if err != nil {
				return err
			}
			ip.Path = abs
			var img api.Image
			if err := a.call(cmd.Context(), api.MethodImageImport, ip, &img); err != nil {
				return err
			}
			return printImage(img, impOut)
		},
	}
	imp.Flags().StringVar(&ip.Name, "name", "", "image name")
	imp.Flags().StringVarP(&impOut, "output", "o", "", "output format: table or json (progress: JSON lines on stderr)")
	imp.Flags().StringVar(&ip.Kernel, "kernel", "", "kernel VMs of this image boot (default: the default kernel)")
	imp.MarkFlagRequired("name")
	ls := newListCmd(a, "List images", api.MethodImageList, "NAME\tID\tSOURCE\tDIGEST\tSIZE\tKERNEL\tCREATED",
		func(i api.Image) string {
			dg := i.Digest
			if len(dg) > 19 {
				dg = dg[:19]
			}
			return fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t%s", i.Name, shortID(i.ID), i.Source, dg, model.FormatSize(i.SizeBytes), i.Kernel, i.CreatedAt.UTC().Format("2006-01-02T15:04:05Z"))
		})
	rm := newPerNameCmd(a, "rm", "Remove images no VM uses", api.MethodImageDelete, nameParams)
	cat := newCatalogCmd(a, "List catalog images (pulled on first use)", api.MethodImageCatalog)
	cmd.AddCommand(pull, imp, ls, rm, cat)
	return cmd
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func newSSHKeyCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "ssh-key", Short: "Manage the daemon's SSH key"}
	cmd.AddCommand(&cobra.Command{
		Use:   "rotate",
		Short: "Make a new key; new VMs get it, existing VMs get it on their next start",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var res api.SSHKeyRotateResult
			if err := a.call(cmd.Context(), api.MethodSSHKeyRotate, nil, &res); err != nil {
				return err
			}
			fmt.Println(res.Fingerprint)
			if len(res.ImagesFailed) > 0 {
				fmt.Fprintf(os.Stderr, "banger: work seeds of %s keep the old key until their next create\n", strings.Join(res.ImagesFailed, ", "))
			}
			if len(res.VMsFailed) > 0 {
				fmt.Fprintf(os.Stderr, "banger: running VMs %s get the new key at their next start (`banger vm restart`)\n", strings.Join(res.VMsFailed, ", "))
			}
			return nil
		},
	})
	return cmd
}

func newDoctorCmd(a *app) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check what this host can run, and why",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			var res api.DoctorResult
			if err := a.call(cmd.Context(), api.MethodDoctor, nil, &res); err != nil {
				return err
			}
			if output == "json" {
				return printJSON(res)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			for _, c := range res.Checks {
				mark := "ok"
				if !c.OK {
					mark = "--"
				}
				fmt.Fprintf(tw, "[%s]\t%s\t%s\n", mark, c.Name, c.Detail)
			}
			tw.Flush()
			if res.Backend != "" {
				fmt.Printf("\nbackend: %s (%s)\n", res.Backend, res.Why)
			} else {
				fmt.Printf("\nbackend: none usable: %s\n", res.Why)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: table or json")
	return cmd
}

// printImage prints a pulled or imported image: its name and short id,
// or JSON.
func printImage(img api.Image, output string) error {
	if output == "json" {
		return printJSON(img)
	}
	fmt.Printf("%s %s\n", img.Name, shortID(img.ID))
	return nil
}
