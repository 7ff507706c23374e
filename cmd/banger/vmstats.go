package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"banger/api"
	"banger/internal/progressui"
)

// statsRefresh is how often a streaming `vm stats` reads again.
const statsRefresh = time.Second

func newVMStatsCmd(a *app) *cobra.Command {
	var noStream bool
	var output string
	cmd := &cobra.Command{
		Use:   "stats [NAME...]",
		Short: "Show VMs' CPU, memory, disk and network use (every running VM if none named); refreshes every second on a terminal",
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			stream := !noStream && term.IsTerminal(int(os.Stdout.Fd()))
			return runStats(cmd.Context(), a, args, output, stream, os.Stdout)
		},
	}
	cmd.Flags().BoolVar(&noStream, "no-stream", false, "print one reading and exit (the default when stdout is not a terminal)")
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: table or json (streaming: one JSON array per line and reading)")
	return cmd
}

func runStats(ctx context.Context, a *app, names []string, output string, stream bool, w io.Writer) error {
	for {
		st, err := a.client().VMStats(ctx, names)
		if err != nil {
			if ctx.Err() != nil {
				return nil // interrupted between readings: not an error
			}
			return err
		}
		switch {
		case output == "json" && stream:
			b, err := json.Marshal(st)
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "%s\n", b)
		case output == "json":
			return printJSON(st)
		default:
			if stream {
				fmt.Fprint(w, "\033[H\033[2J") // home, clear: redraw in place
			}
			if err := printStatsTable(w, st); err != nil {
				return err
			}
		}
		if !stream {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(statsRefresh):
		}
	}
}

func printStatsTable(w io.Writer, st []api.VMStats) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tCPU %\tMEM (VMM RSS / LIMIT)\tGUEST MEM\tDISK (OVERLAY / WORK)\tNET (RX / TX)")
	for _, s := range st {
		guest := "-"
		if s.GuestMemUsedBytes > 0 {
			guest = progressui.HumanBytes(s.GuestMemUsedBytes)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.1f%%\t%s / %s\t%s\t%s / %s\t%s / %s\n", s.Name, s.State, s.CPUPercent,
			progressui.HumanBytes(s.MemRSSBytes), progressui.HumanBytes(s.MemLimitBytes), guest,
			progressui.HumanBytes(s.DiskOverlayBytes), progressui.HumanBytes(s.DiskWorkBytes),
			progressui.HumanBytes(int64(s.NetRxBytes)), progressui.HumanBytes(int64(s.NetTxBytes)))
	}
	return tw.Flush()
}
