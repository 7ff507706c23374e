package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// groupPaths lists every command group of the CLI (commands with
// subcommands below the root), found in the command tree so that a group
// added later is covered without editing this test.
func groupPaths(c *cobra.Command) [][]string {
	var out [][]string
	for _, sub := range c.Commands() {
		if !sub.HasSubCommands() {
			continue
		}
		path := strings.Fields(sub.CommandPath())[1:]
		out = append(out, path)
		out = append(out, groupPaths(sub)...)
	}
	return out
}

// TestCLIUnknownSubcommand runs the built CLI with an unknown word after
// every group: it must fail with cobra's root wording, not print help and
// exit 0; the bare group still prints its help.
func TestCLIUnknownSubcommand(t *testing.T) {
	groups := groupPaths(newRootCmd())
	if len(groups) < 6 {
		t.Fatalf("found only %v: the command tree changed shape?", groups)
	}
	sock := filepath.Join(t.TempDir(), "none.sock") // no daemon is needed
	for _, g := range groups {
		t.Run(strings.Join(g, "_"), func(t *testing.T) {
			args := append([]string{"--socket", sock}, g...)
			out, err := exec.Command(bangerBin, append(args, "frobnicate")...).CombinedOutput()
			want := `unknown command "frobnicate" for "banger ` + strings.Join(g, " ") + `"`
			if exitCode(err) == 0 || !strings.Contains(string(out), want) {
				t.Errorf("banger %s frobnicate: exit %d, output %q; want non-zero and %q", strings.Join(g, " "), exitCode(err), out, want)
			}
			out, err = exec.Command(bangerBin, args...).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "Available Commands:") {
				t.Errorf("banger %s: %v %q; want its help", strings.Join(g, " "), err, out)
			}
		})
	}
	out, err := exec.Command(bangerBin, "kernel", "lss").CombinedOutput()
	if err == nil || !strings.Contains(string(out), `did you mean ls?`) {
		t.Errorf("banger kernel lss: %v %q; want a suggestion", err, out)
	}
}
