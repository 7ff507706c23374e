package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"banger/api"
)

func newEventsCmd(a *app) *cobra.Command {
	var output string
	var filters []string
	cmd := &cobra.Command{
		Use:   "events [--filter KEY=VALUE]... [-o json]",
		Short: "Stream what happens to VMs, images and kernels (create, start, stop, die, rm, pull) until interrupted",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			conn, err := a.client().Stream(cmd.Context(), api.MethodEvents, api.EventsParams{Filters: filters})
			if err != nil {
				return err
			}
			defer conn.Close()
			go func() { <-cmd.Context().Done(); conn.Close() }()
			sc := bufio.NewScanner(conn)
			sc.Buffer(make([]byte, 64<<10), 1<<20)
			for sc.Scan() {
				if output == "json" {
					fmt.Println(sc.Text())
					continue
				}
				var e api.Event
				if json.Unmarshal(sc.Bytes(), &e) != nil {
					continue
				}
				var attrs []string
				for k, v := range e.Attrs {
					attrs = append(attrs, k+"="+v)
				}
				line := fmt.Sprintf("%s %s %s %s (%s)", e.Time, e.Type, e.Action, e.Name, short(e.ID))
				if len(attrs) > 0 {
					line += " " + strings.Join(attrs, " ")
				}
				fmt.Fprintln(os.Stdout, line)
			}
			if cmd.Context().Err() != nil {
				return nil // interrupted: the normal end
			}
			return sc.Err()
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: table (one line an event) or json (one object a line)")
	cmd.Flags().StringArrayVarP(&filters, "filter", "f", nil, "type=vm|image|kernel, action=ACTION, name=NAME, id=ID (repeatable: one key's values OR, keys AND)")
	return cmd
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
