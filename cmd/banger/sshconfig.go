package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"banger/api"
)

// sshHostConfig is one VM's OpenSSH client settings (`vm ssh-config`).
type sshHostConfig struct {
	Name string `json:"name"`
	// Hosts are the names the block matches (NAME and NAME.vm).
	Hosts              []string `json:"hosts"`
	User               string   `json:"user"`
	IdentityFile       string   `json:"identity_file"`
	UserKnownHostsFile string   `json:"user_known_hosts_file"`
	HostKeyAlias       string   `json:"host_key_alias"`
	ProxyCommand       string   `json:"proxy_command"`
}

func newVMSSHConfigCmd(a *app) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "ssh-config [NAME...]",
		Short: "Print an OpenSSH client config for VMs (all running VMs without NAME)",
		Long: `Print an OpenSSH config block per VM, so ssh, scp, sftp and rsync reach
it by name through the daemon socket (no DNS or route to the guest needed):

  banger vm ssh-config > ~/.ssh/banger.conf   # then: Include banger.conf
  ssh -F cfg web -- uname -r;  rsync -a -e 'ssh -F cfg' dir/ web:/root/dir/

ssh uses your own banger key (~/.config/banger/id_ed25519, authorized in
your VMs by the daemon); the guest's host key is checked against a copy of
what the daemon recorded at the VM's first boot (StrictHostKeyChecking yes).`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			cfgs, err := sshConfigs(cmd.Context(), a, args)
			if err != nil {
				return err
			}
			if output == "json" || output == "yaml" {
				return printData(output, cfgs)
			}
			for i, c := range cfgs {
				if i > 0 {
					fmt.Println()
				}
				fmt.Print(c.block())
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: table (ssh_config text), json or yaml")
	return cmd
}

func sshConfigs(ctx context.Context, a *app, names []string) ([]sshHostConfig, error) {
	if len(names) == 0 {
		vms, err := a.client().ListVMs(ctx, api.VMListParams{})
		if err != nil {
			return nil, err
		}
		for _, v := range vms {
			names = append(names, v.Name)
		}
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	sock, err := filepath.Abs(a.socket)
	if err != nil {
		return nil, err
	}
	out := []sshHostConfig{}
	for _, n := range names {
		// The caller's own key (authorized by the daemon) and a known_hosts
		// file of the caller's holding the guest's host key (userkey.go).
		ga, err := getGuestAccess(ctx, a, n)
		if err != nil {
			return nil, err
		}
		info := ga.info
		out = append(out, sshHostConfig{
			Name: info.Name, Hosts: []string{info.Name, info.Name + ".vm"}, User: "root",
			IdentityFile: ga.keyPath, UserKnownHostsFile: ga.knownHosts,
			HostKeyAlias: info.Name + ".vm",
			ProxyCommand: fmt.Sprintf("%s --socket %s vm proxy %s", sshQuote(self), sshQuote(sock), info.Name),
		})
	}
	return out, nil
}

// block renders the ssh_config text.
func (c sshHostConfig) block() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Host %s\n", strings.Join(c.Hosts, " "))
	for _, kv := range [][2]string{
		{"User", c.User},
		{"IdentityFile", sshQuote(c.IdentityFile)},
		{"IdentitiesOnly", "yes"},
		{"UserKnownHostsFile", sshQuote(c.UserKnownHostsFile)},
		{"StrictHostKeyChecking", "yes"},
		{"HostKeyAlias", c.HostKeyAlias},
		{"ProxyCommand", c.ProxyCommand},
	} {
		fmt.Fprintf(&b, "  %s %s\n", kv[0], kv[1])
	}
	return b.String()
}

// sshQuote double-quotes a value with spaces for ssh_config (and for the
// shell ssh runs ProxyCommand with).
func sshQuote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\"'\\$`") {
		return s
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "$", `\$`, "`", "\\`").Replace(s) + `"`
}
