package main

import (
	"encoding/json"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"banger/api"
)

// jsonFields are the JSON keys of T's fields.
func jsonFields[T any]() map[string]bool {
	out := map[string]bool{}
	t := reflect.TypeFor[T]()
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			out[name] = true
		}
	}
	return out
}

func checkColumns[T any](t *testing.T, list string, cols []column[T]) {
	t.Helper()
	fields := jsonFields[T]()
	heads := map[string]bool{}
	for _, c := range cols {
		if !fields[c.field] {
			t.Errorf("%s: column %s shows %q, which -o json does not have", list, c.head, c.field)
		}
		if heads[c.head] {
			t.Errorf("%s: two columns named %s", list, c.head)
		}
		heads[c.head] = true
	}
}

// TestListColumnsAreJSONFields: every table column of every list is a
// field of the same list's -o json (and -o yaml) output.
func TestListColumnsAreJSONFields(t *testing.T) {
	checkColumns(t, "vm ls", vmColumns)
	checkColumns(t, "image ls", imageColumns)
	checkColumns(t, "kernel ls", kernelColumns)
	checkColumns(t, "image/kernel catalog", catalogColumns)
	checkColumns(t, "snapshot ls", snapshotColumns)
	if vmColumns[len(vmColumns)-2].head != "LABELS" {
		t.Errorf("vm ls has no LABELS column")
	}
}

// TestOutputYAML: -o yaml of each list and inspect command is the same
// data as its -o json (same keys, same values), and vm ls's table shows
// the labels.
func TestOutputYAML(t *testing.T) {
	dir := t.TempDir()
	d := startDaemonProc(t, filepath.Join(dir, "state"), filepath.Join(dir, "run"))
	seedFake(t, d)
	if _, stderr, err := d.run("vm", "create", "--no-start", "--name", "y1", "--label", "ci=job-7", "--label", "team=infra"); err != nil {
		t.Fatalf("create: %v %s", err, stderr)
	}
	for _, args := range [][]string{
		{"vm", "ls", "-a"}, {"vm", "inspect", "y1"}, {"image", "ls"}, {"kernel", "ls"},
		{"snapshot", "ls"}, {"doctor"},
	} {
		js, stderr, err := d.run(append(args, "-o", "json")...)
		if err != nil {
			t.Fatalf("%v -o json: %v %s", args, err, stderr)
		}
		ys, stderr, err := d.run(append(args, "-o", "yaml")...)
		if err != nil {
			t.Fatalf("%v -o yaml: %v %s", args, err, stderr)
		}
		fromYAML, err := yaml.YAMLToJSON([]byte(ys))
		if err != nil {
			t.Fatalf("%v -o yaml is not YAML: %v\n%s", args, err, ys)
		}
		var a, b any
		if err := json.Unmarshal([]byte(js), &a); err != nil {
			t.Fatal(err)
		}
		json.Unmarshal(fromYAML, &b)
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%v: -o yaml differs from -o json:\njson: %s\nyaml: %s", args, js, ys)
		}
	}
	var vms []api.VM
	js, _, _ := d.run("vm", "ls", "-a", "-o", "json")
	json.Unmarshal([]byte(js), &vms)
	if len(vms) != 1 || vms[0].Labels["ci"] != "job-7" {
		t.Fatalf("vm ls -o json: %s", js)
	}
	table, _, _ := d.run("vm", "ls", "-a")
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "LABELS") || !strings.Contains(lines[1], "ci=job-7,team=infra") {
		t.Errorf("vm ls table lacks the labels:\n%s", table)
	}
	if _, stderr, err := d.run("vm", "ls", "-o", "xml"); err == nil || !strings.Contains(stderr, `"xml"`) {
		t.Errorf("vm ls -o xml: %v %q, want an error naming xml", err, stderr)
	}
}
