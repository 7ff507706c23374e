package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"banger/api"
	"banger/client"
	"banger/internal/daemon"
	"banger/internal/progressui"
)

// app is what the commands share, passed to each explicitly: the daemon
// socket (--socket, env BANGER_SOCKET) and the RPC client made from it on
// first use, after the flags are parsed.
type app struct {
	socket string
	// progress is --progress (internal/progressui); jsonOut: the command prints
	// JSON (-o json), so auto progress is JSON lines too.
	progress string
	jsonOut  bool

	clientOnce sync.Once
	c          *client.Client
	sink       progressui.Sink
}

// client returns the SDK client; it renders progress on stderr.
func (a *app) client() *client.Client {
	a.clientOnce.Do(func() {
		a.sink = progressui.Resolve(a.progress, a.jsonOut, progressui.IsTTY(os.Stdout), progressui.IsTTY(os.Stderr), os.Stderr)
		a.c = client.New(a.socket, client.WithProgress(a.sink.Show))
	})
	return a.c
}

// finish completes the progress of the call that just returned (bars
// drawn to their end) before the command prints its result.
func (a *app) finish() {
	if a.sink != nil {
		a.sink.Finish()
	}
}

func newRootCmd() *cobra.Command {
	a := &app{}
	root := &cobra.Command{
		Use:           "banger",
		Short:         "Disposable microVMs on one Linux host, as easily as docker run",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&a.socket, "socket", api.SocketFromEnv(), "daemon socket (env BANGER_SOCKET)")
	root.PersistentFlags().StringVar(&a.progress, "progress", progressui.Auto, "how to show progress on stderr: auto (bars on a terminal, JSON lines with -o json, else plain), bar, plain, json or none")
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if err := progressui.CheckMode(a.progress); err != nil {
			return err
		}
		if f := cmd.Flags().Lookup("output"); f != nil && f.Value.String() == "json" {
			a.jsonOut = true
		}
		return nil
	}
	root.AddCommand(
		newDaemonCmd(a), newVMCmd(a), newImageCmd(a), newKernelCmd(a), newSnapshotCmd(a),
		newSSHKeyCmd(a), newDNSCmd(a), newDoctorCmd(a), newVersionCmd(a), newEventsCmd(a), newSystemCmd(a), newKubeletCmd(a),
	)
	// cobra adds these at Execute; adding them now lets guardGroups cover
	// `completion` too.
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		guardGroups(c)
	}
	addCompletions(root, a)
	return root
}

// guardGroups makes every command group under the root (a command with
// subcommands and no action of its own) refuse words it does not know.
// cobra checks for unknown commands only at the root: a group printed its
// help and exited 0 on `banger vm frobnicate`, so a typo in a script
// passed unnoticed.
func guardGroups(c *cobra.Command) {
	if c.HasSubCommands() && !c.Runnable() {
		c.Args = unknownSubcommand
		c.SuggestionsMinimumDistance = 2 // cobra's default, which only the root gets
		c.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	}
	for _, sub := range c.Commands() {
		guardGroups(sub)
	}
}

// unknownSubcommand is a group's Args: no args (print help) or an error
// naming the word, with cobra's suggestions when it has some.
func unknownSubcommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += fmt.Sprintf(" (did you mean %s?)", strings.Join(s, " or "))
	}
	return fmt.Errorf("%s: `%s --help` lists its commands", msg, cmd.CommandPath())
}

func newVersionCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the CLI version (and the daemon's, if reachable)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Printf("banger %s (RPC protocol %d)\n", daemon.Version, client.ProtocolVersion)
			p, err := a.client().CheckVersion(cmd.Context())
			var ve *client.VersionError
			if err == nil || errors.As(err, &ve) {
				fmt.Printf("daemon %s (pid %d, state %s, RPC protocol %d)\n", p.Version, p.PID, p.StateDir, p.Protocol)
			}
			if ve != nil {
				return ve
			}
			return nil
		},
	}
}

// printJSON writes v as indented JSON.
func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printData writes v as -o asks: indented JSON, or YAML with the same
// field names (sigs.k8s.io/yaml goes through encoding/json, so the json
// tags name the YAML keys too and the two never drift apart).
func printData(output string, v any) error {
	if output != "yaml" {
		return printJSON(v)
	}
	b, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(b)
	return err
}

// checkOutput validates -o.
func checkOutput(o string) error {
	if o != "" && o != "table" && o != "json" && o != "yaml" {
		return fmt.Errorf("invalid output format %q: use table, json or yaml", o)
	}
	return nil
}

func absPath(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("path %q: %w", p, err)
	}
	return abs, nil
}
