package main

import (
	"encoding/json"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestLabelsFiltersAndFormat(t *testing.T) {
	dir := t.TempDir()
	d := startDaemonProc(t, filepath.Join(dir, "state"), filepath.Join(dir, "run"))
	seedFake(t, d)
	ids := map[string]string{}
	for _, c := range []struct{ name, label string }{{"j7a", "ci=job-7"}, {"j7b", "ci=job-7"}, {"j8", "ci=job-8"}, {"plain", ""}} {
		args := []string{"vm", "create", "--no-start", "--name", c.name, "-o", "json"}
		if c.label != "" {
			args = append(args, "--label", c.label, "--label", "team=infra")
		}
		out, stderr, err := d.run(args...)
		if err != nil {
			t.Fatalf("create %s: %v %s", c.name, err, stderr)
		}
		var vm map[string]any
		json.Unmarshal([]byte(out), &vm)
		ids[c.name], _ = vm["id"].(string)
	}
	out, stderr, err := d.run("vm", "ls", "-a", "--filter", "label=ci=job-7", "-q")
	if err != nil {
		t.Fatalf("ls -q: %v %s", err, stderr)
	}
	got := strings.Fields(out)
	sort.Strings(got)
	want := []string{ids["j7a"], ids["j7b"]}
	sort.Strings(want)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("ls --filter label=ci=job-7 -q = %v, want %v", got, want)
	}
	// A state filter lists stopped VMs without -a; filters AND together.
	out, _, _ = d.run("vm", "ls", "--filter", "state=stopped", "--filter", "label=team", "--format", "{{.Name}}:{{index .Labels \"ci\"}}")
	lines := strings.Fields(out)
	sort.Strings(lines)
	if strings.Join(lines, " ") != "j7a:job-7 j7b:job-7 j8:job-8" {
		t.Errorf("ls --filter state= --filter label=team --format: %q", out)
	}
	for _, bad := range [][]string{
		{"vm", "ls", "--filter", "colour=red"},
		{"vm", "ls", "-a", "--format", "{{.Nope}}"},
		{"vm", "create", "--no-start", "--label", "-bad=x"},
		{"vm", "create", "--no-start", "--ttl", "soon"},
	} {
		if _, stderr, err := d.run(bad...); err == nil || stderr == "" {
			t.Errorf("banger %v: want an error, got %v %q", bad, err, stderr)
		}
	}
	if _, stderr, err := d.run("vm", "rm", "--filter", "label=ci=job-7"); err != nil {
		t.Fatalf("rm --filter: %v %s", err, stderr)
	}
	out, _, _ = d.run("vm", "ls", "-a", "--format", "{{.Name}}")
	if f := strings.Fields(out); len(f) != 2 {
		t.Errorf("after rm --filter label=ci=job-7: %v", f)
	}
}

// A VM with --ttl is removed when it expires, also when the daemon was
// killed in between (the first pass after a start removes it).
func TestTTLRemovesExpiredVMs(t *testing.T) {
	dir := t.TempDir()
	state, run := filepath.Join(dir, "state"), filepath.Join(dir, "run")
	d := startDaemonProc(t, state, run)
	seedFake(t, d)
	for _, c := range []struct{ name, ttl string }{{"short", "2s"}, {"later", "6s"}, {"kept", ""}} {
		args := []string{"vm", "create", "--no-start", "--name", c.name}
		if c.ttl != "" {
			args = append(args, "--ttl", c.ttl)
		}
		if _, stderr, err := d.run(args...); err != nil {
			t.Fatalf("create %s: %v %s", c.name, err, stderr)
		}
	}
	names := func(d *daemonProc) string {
		out, _, _ := d.run("vm", "ls", "-a", "--format", "{{.Name}}")
		f := strings.Fields(out)
		sort.Strings(f)
		return strings.Join(f, " ")
	}
	deadline := time.Now().Add(10 * time.Second)
	for names(d) != "kept later" {
		if time.Now().After(deadline) {
			t.Fatalf("short not removed after its ttl: %s", names(d))
		}
		time.Sleep(300 * time.Millisecond)
	}
	// Kill the daemon; "later" expires while none runs.
	d.cmd.Process.Signal(syscall.SIGKILL)
	d.cmd.Wait()
	time.Sleep(6 * time.Second)
	d2 := startDaemonProc(t, state, run)
	deadline = time.Now().Add(5 * time.Second)
	for names(d2) != "kept" {
		if time.Now().After(deadline) {
			t.Fatalf("later not removed after a restart: %s", names(d2))
		}
		time.Sleep(200 * time.Millisecond)
	}
}
