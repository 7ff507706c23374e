package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"banger/api"
	"banger/client"
)

func newDNSCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "dns", Short: "Resolve <name>.vm on the host through systemd-resolved"}
	c := a.client
	for _, v := range []struct {
		use, short string
		do         func(context.Context) (api.DNSResult, error)
	}{
		{"setup", "resolvectl dns <bridge> <bridge-ip>; resolvectl domain <bridge> ~vm", func(ctx context.Context) (api.DNSResult, error) { return c().DNSSetup(ctx) }},
		{"teardown", "resolvectl revert <bridge>", func(ctx context.Context) (api.DNSResult, error) { return c().DNSTeardown(ctx) }},
	} {
		v := v
		cmd.AddCommand(&cobra.Command{
			Use: v.use, Short: v.short, Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				res, err := v.do(cmd.Context())
				if err != nil {
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
			img, err := a.client().PullImage(cmd.Context(), api.ImagePullParams{Ref: args[0], Name: pullName}, nil)
			a.finish()
			if err != nil {
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
			img, err := a.client().ImportImage(cmd.Context(), ip, nil)
			a.finish()
			if err != nil {
				return err
			}
			return printImage(img, impOut)
		},
	}
	imp.Flags().StringVar(&ip.Name, "name", "", "image name")
	imp.Flags().StringVarP(&impOut, "output", "o", "", "output format: table or json (progress: JSON lines on stderr)")
	imp.Flags().StringVar(&ip.Kernel, "kernel", "", "kernel VMs of this image boot (default: the default kernel)")
	imp.MarkFlagRequired("name")
	ls := newListCmd(a, "List images", (*client.Client).ListImages, imageColumns)
	rm := newPerNameCmd(a, "rm", "Remove images no VM uses", discard((*client.Client).RemoveImage))
	cat := newCatalogCmd(a, "List catalog images (pulled on first use)", (*client.Client).ImageCatalog)
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
			res, err := a.client().RotateSSHKey(cmd.Context())
			if err != nil {
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
			res, err := a.client().Doctor(cmd.Context())
			if err != nil {
				return err
			}
			if output == "json" || output == "yaml" {
				return printData(output, res)
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
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: table, json or yaml")
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
