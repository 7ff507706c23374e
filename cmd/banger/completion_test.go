package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// completions runs cobra's hidden __complete and returns the candidates.
func completions(t *testing.T, d *daemonProc, args ...string) []string {
	t.Helper()
	out, stderr, err := d.run(append([]string{"__complete"}, args...)...)
	if err != nil {
		t.Fatalf("__complete %v: %v %s", args, err, stderr)
	}
	var names []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l != "" && !strings.HasPrefix(l, ":") {
			names = append(names, l)
		}
	}
	return names
}

func TestCompletionNamesFromTheDaemon(t *testing.T) {
	dir := t.TempDir()
	d := startDaemonProc(t, filepath.Join(dir, "state"), filepath.Join(dir, "run"))
	seedFake(t, d)
	for _, n := range []string{"web1", "web2", "db"} {
		if _, stderr, err := d.run("vm", "create", "--no-start", "--name", n); err != nil {
			t.Fatalf("create %s: %v %s", n, err, stderr)
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"vm", "rm", ""}, "db,web1,web2"},
		{[]string{"vm", "rm", "web1", "w"}, "web2"}, // a name given once is not offered again
		{[]string{"vm", "start", "we"}, "web1,web2"},
		{[]string{"vm", "exec", ""}, ""}, // none is running
		{[]string{"vm", "inspect", "db", ""}, ""},
		{[]string{"vm", "create", "--image", ""}, "busybox"},
		{[]string{"vm", "run", "--kernel", "f"}, "fake"},
		{[]string{"image", "rm", ""}, "busybox"},
		{[]string{"kernel", "rm", ""}, "fake"},
	} {
		got := completions(t, d, c.args...)
		if strings.Join(sortStrings(got), ",") != c.want {
			t.Errorf("__complete %q = %v, want %s", c.args, got, c.want)
		}
	}
}

func sortStrings(s []string) []string {
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s
}
