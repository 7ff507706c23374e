package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/spf13/cobra"

	"banger/internal/api"
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
	c          *api.Client
	sink       progressui.Sink
}

// client returns the RPC client; it renders progress on stderr.
func (a *app) client() *api.Client {
	a.clientOnce.Do(func() {
		a.c = api.NewClient(a.socket)
		a.sink = progressui.Resolve(a.progress, a.jsonOut, progressui.IsTTY(os.Stdout), progressui.IsTTY(os.Stderr), os.Stderr)
		a.c.OnProgress = a.sink.Show
	})
	return a.c
}

// call is a.client().Call, with the call's progress finished (bars
// completed and drawn) before it returns.
func (a *app) call(ctx context.Context, method string, params, out any) error {
	err := a.client().Call(ctx, method, params, out)
	a.sink.Finish()
	return err
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
		newSSHKeyCmd(a), newDNSCmd(a), newDoctorCmd(a), newVersionCmd(a), newEventsCmd(a),
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
			fmt.Printf("banger %s\n", daemon.Version)
			var p api.PingResult
			if err := a.call(cmd.Context(), api.MethodPing, nil, &p); err == nil {
				fmt.Printf("daemon %s (pid %d, state %s)\n", p.Version, p.PID, p.StateDir)
			}
			return nil
		},
	}
}

func humanBytes(n int64) string {
	const u = 1024
	if n < u {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(u), 0
	for m := n / u; m >= u && exp < 4; m /= u {
		div *= u
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// printJSON writes v as indented JSON.
func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// checkOutput validates -o.
func checkOutput(o string) error {
	if o != "" && o != "table" && o != "json" {
		return fmt.Errorf("invalid output format %q: use table or json", o)
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
