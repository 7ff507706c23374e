package main

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"banger/api"
	"banger/internal/model"
)

// column is one column of a list's table. field is the JSON key of the
// item it shows: every table column is a field of the list's -o json and
// -o yaml output, under that name (TestListColumnsAreJSONFields).
type column[T any] struct {
	head, field string
	cell        func(T) string
}

// printTable prints items as a table of cols.
func printTable[T any](cols []column[T], items []T) error {
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	heads := make([]string, len(cols))
	for i, c := range cols {
		heads[i] = c.head
	}
	fmt.Fprintln(tw, strings.Join(heads, "\t"))
	for _, it := range items {
		cells := make([]string, len(cols))
		for i, c := range cols {
			cells[i] = c.cell(it)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

var vmColumns = []column[api.VM]{
	{"NAME", "name", func(v api.VM) string { return v.Name }},
	{"STATE", "state", func(v api.VM) string { return string(v.State) }},
	{"IMAGE", "image", func(v api.VM) string { return v.Image }},
	{"IP", "guest_ip", func(v api.VM) string { return v.GuestIP }},
	{"DNS", "dns_name", func(v api.VM) string { return v.DNSName }},
	{"VCPU", "vcpu", func(v api.VM) string { return fmt.Sprint(v.VCPU) }},
	{"MEMORY", "memory_mib", func(v api.VM) string { return fmt.Sprintf("%dM", v.MemoryMiB) }},
	{"PORTS", "ports", func(v api.VM) string { return formatPorts(v.Ports) }},
	{"LABELS", "labels", func(v api.VM) string { return formatLabels(v.Labels) }},
	{"CREATED", "created_at", func(v api.VM) string { return v.CreatedAt }},
}

var imageColumns = []column[api.Image]{
	{"NAME", "name", func(i api.Image) string { return i.Name }},
	{"ID", "id", func(i api.Image) string { return shortID(i.ID) }},
	{"SOURCE", "source", func(i api.Image) string { return i.Source }},
	{"DIGEST", "digest", func(i api.Image) string {
		if len(i.Digest) > 19 {
			return i.Digest[:19]
		}
		return i.Digest
	}},
	{"SIZE", "size_bytes", func(i api.Image) string { return model.FormatSize(i.SizeBytes) }},
	{"KERNEL", "kernel", func(i api.Image) string { return i.Kernel }},
	{"CREATED", "created_at", func(i api.Image) string { return i.CreatedAt.UTC().Format("2006-01-02T15:04:05Z") }},
}

var kernelColumns = []column[api.Kernel]{
	{"NAME", "name", func(k api.Kernel) string { return k.Name }},
	{"RELEASE", "release", func(k api.Kernel) string { return k.Release }},
	{"FORMAT", "format", func(k api.Kernel) string { return k.Format }},
	{"SIZE", "size_bytes", func(k api.Kernel) string { return model.FormatSize(k.SizeBytes) }},
	{"SOURCE", "source", func(k api.Kernel) string { return k.Source }},
	{"PULLED", "pulled_at", func(k api.Kernel) string { return k.PulledAt.UTC().Format("2006-01-02T15:04:05Z") }},
}

var catalogColumns = []column[api.CatalogEntry]{
	{"NAME", "name", func(e api.CatalogEntry) string {
		if e.Default {
			return e.Name + " (default)"
		}
		return e.Name
	}},
	{"PULLED", "pulled", func(e api.CatalogEntry) string { return fmt.Sprint(e.Pulled) }},
	{"SOURCE", "source", func(e api.CatalogEntry) string { return e.Source }},
	{"DESCRIPTION", "description", func(e api.CatalogEntry) string { return e.Description }},
}

var snapshotColumns = []column[api.Snapshot]{
	{"NAME", "name", func(s api.Snapshot) string { return s.Name }},
	{"SOURCE", "source_vm", func(s api.Snapshot) string { return s.SourceVM }},
	{"IMAGE", "image", func(s api.Snapshot) string { return s.Image }},
	{"MEMORY", "memory_mib", func(s api.Snapshot) string { return fmt.Sprintf("%dM", s.MemoryMiB) }},
	{"STATE", "state_bytes", func(s api.Snapshot) string { return model.FormatSize(s.StateBytes) }},
	{"DISKS", "disk_bytes", func(s api.Snapshot) string { return model.FormatSize(s.DiskBytes) }},
	{"PAUSED", "paused_ms", func(s api.Snapshot) string { return (time.Duration(s.PausedMs) * time.Millisecond).String() }},
	{"CREATED", "created_at", func(s api.Snapshot) string { return s.CreatedAt }},
}

// formatLabels is k=v,k2=v2 sorted by key, "-" for none.
func formatLabels(l map[string]string) string {
	if len(l) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + l[k]
	}
	return strings.Join(keys, ",")
}
