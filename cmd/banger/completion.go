package main

import (
	"context"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"banger/api"
	"banger/client"
)

// Shell completion (`banger completion bash|zsh|fish`, cobra's) completes
// VM, image and kernel names by asking the daemon. A daemon that does not
// answer within a second completes nothing rather than hang the shell.

// nameSource lists the names a completion offers.
type nameSource func(ctx context.Context, a *app) []string

func vmNames(keep func(state string) bool) nameSource {
	return func(ctx context.Context, a *app) []string {
		vms, err := client.New(a.socket).ListVMs(ctx, api.VMListParams{All: true})
		if err != nil {
			return nil
		}
		var out []string
		for _, v := range vms {
			if keep == nil || keep(string(v.State)) {
				out = append(out, v.Name)
			}
		}
		return out
	}
}

func listNames[T any](list func(*client.Client, context.Context) ([]T, error), name func(T) string) nameSource {
	return func(ctx context.Context, a *app) []string {
		items, err := list(client.New(a.socket), ctx)
		if err != nil {
			return nil
		}
		out := make([]string, 0, len(items))
		for _, it := range items {
			out = append(out, name(it))
		}
		return out
	}
}

var (
	allVMs     = vmNames(nil)
	runningVMs = vmNames(func(s string) bool { return s == "running" })
	stoppedVMs = vmNames(func(s string) bool { return s != "running" && s != "starting" })
	imageNames = listNames((*client.Client).ListImages, func(i api.Image) string { return i.Name })
	kernNames  = listNames((*client.Client).ListKernels, func(k api.Kernel) string { return k.Name })
)

// argCompletions: command path → what its name arguments are. "1" after
// the path: only the first argument is a name (the rest is a command).
var argCompletions = map[string]nameSource{
	"banger vm exec 1":    runningVMs,
	"banger vm ssh 1":     runningVMs,
	"banger vm logs 1":    allVMs,
	"banger vm inspect 1": allVMs,
	"banger vm start":     stoppedVMs,
	"banger vm stop":      runningVMs,
	"banger vm stats":     runningVMs,
	"banger vm restart":   allVMs,
	"banger vm rm":        allVMs,
	"banger image rm":     imageNames,
	"banger kernel rm":    kernNames,
}

// flagCompletions: flag name → its values, on every command that has it.
var flagCompletions = map[string]nameSource{
	"image":  imageNames,
	"kernel": kernNames,
}

// addCompletions wires argCompletions and flagCompletions into the tree.
func addCompletions(root *cobra.Command, a *app) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for key, src := range argCompletions {
			path, first := strings.CutSuffix(key, " 1")
			if c.CommandPath() == path && c.ValidArgsFunction == nil {
				c.ValidArgsFunction = complete(a, src, first)
			}
		}
		for flag, src := range flagCompletions {
			if c.Flags().Lookup(flag) != nil {
				c.RegisterFlagCompletionFunc(flag, complete(a, src, false))
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

func complete(a *app, src nameSource, firstOnly bool) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if firstOnly && len(args) > 0 {
			return nil, cobra.ShellCompDirectiveDefault
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		var out []string
		for _, n := range src(ctx, a) {
			if strings.HasPrefix(n, toComplete) && !contains(args, n) {
				out = append(out, n)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
