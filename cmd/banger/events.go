package main

import (
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
			return a.client().Events(cmd.Context(), api.EventsParams{Filters: filters}, func(e api.Event) error {
				switch output {
				case "json":
					b, err := json.Marshal(e)
					if err != nil {
						return err
					}
					_, err = fmt.Printf("%s\n", b)
					return err
				case "yaml": // one document an event
					fmt.Println("---")
					return printData(output, e)
				}
				var attrs []string
				for k, v := range e.Attrs {
					attrs = append(attrs, k+"="+v)
				}
				line := fmt.Sprintf("%s %s %s %s (%s)", e.Time, e.Type, e.Action, e.Name, short(e.ID))
				if len(attrs) > 0 {
					line += " " + strings.Join(attrs, " ")
				}
				_, err := fmt.Fprintln(os.Stdout, line)
				return err
			})
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: table (one line an event), json (one object a line) or yaml (one document an event)")
	cmd.Flags().StringArrayVarP(&filters, "filter", "f", nil, "type=vm|image|kernel, action=ACTION, name=NAME, id=ID (repeatable: one key's values OR, keys AND)")
	return cmd
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
