package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fakeTB records what a helper asked of the test instead of doing it, so
// a failure under CI is observed, not suffered. Methods it does not
// override would panic (nil embedded TB): the helpers must not call them.
type fakeTB struct {
	testing.TB
	fatal, skip, logs []string
}

func (f *fakeTB) Helper()                   {}
func (f *fakeTB) Fatalf(s string, a ...any) { f.fatal = append(f.fatal, fmt.Sprintf(s, a...)) }
func (f *fakeTB) Skip(a ...any)             { f.skip = append(f.skip, fmt.Sprint(a...)) }
func (f *fakeTB) Logf(s string, a ...any)   { f.logs = append(f.logs, fmt.Sprintf(s, a...)) }

// outcome is "fatal: msg", "skip: msg" or "ran".
func (f *fakeTB) outcome(t *testing.T) string {
	t.Helper()
	switch {
	case len(f.fatal)+len(f.skip) > 1:
		t.Fatalf("more than one outcome: fatal %q, skip %q", f.fatal, f.skip)
	case len(f.fatal) == 1:
		return "fatal: " + f.fatal[0]
	case len(f.skip) == 1:
		return "skip: " + f.skip[0]
	}
	return "ran"
}

func TestSkipByCI(t *testing.T) {
	for _, c := range []struct {
		ci   string
		want string
	}{
		{"true", "fatal: no widget here [CI=true: a missing prerequisite fails the test instead of skipping it]"},
		{"", "skip: no widget here"},
		{"false", "skip: no widget here"},
		// Exactly "true": anything else is not CI.
		{"1", "skip: no widget here"},
		{"TRUE", "skip: no widget here"},
	} {
		t.Run("CI="+c.ci, func(t *testing.T) {
			t.Setenv("CI", c.ci)
			f := &fakeTB{}
			Skip(f, "no %s here", "widget")
			if got := f.outcome(t); got != c.want {
				t.Fatalf("got %q, want %q", got, c.want)
			}
		})
	}
}

// pathWith makes PATH a fresh directory holding executables named tools.
func pathWith(t *testing.T, tools ...string) {
	dir := t.TempDir()
	for _, n := range tools {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", dir)
}

func TestRequireTool(t *testing.T) {
	for _, c := range []struct {
		name, ci string
		have     []string
		want     []string
		wantRun  []string
		tools    []string
		ran      bool
	}{
		{name: "all there", ci: "true", have: []string{"nft", "ip"}, tools: []string{"nft", "ip"}, ran: true},
		{name: "none asked", ci: "true", ran: true},
		{name: "missing known, CI", ci: "true", have: []string{"ip"}, tools: []string{"ip", "nft"},
			want: []string{"fatal: ", "nft not installed (apt-get install nftables; scripts/install-deps.sh", "[CI=true"}},
		{name: "missing known, not CI", ci: "", tools: []string{"mkfs.ext4"},
			want: []string{"skip: ", "mkfs.ext4 not installed (apt-get install e2fsprogs;"}},
		{name: "missing unknown", ci: "", tools: []string{"banger-no-such-tool"},
			want: []string{"skip: ", "banger-no-such-tool not found on PATH"}},
		{name: "first missing named once", ci: "true", tools: []string{"qemu-system-x86_64", "busybox"},
			want: []string{"fatal: ", "qemu-system-x86_64 not installed (apt-get install qemu-system-x86;"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("CI", c.ci)
			pathWith(t, c.have...)
			f := &fakeTB{}
			RequireTool(f, c.tools...)
			got := f.outcome(t)
			if c.ran {
				if got != "ran" {
					t.Fatalf("got %q, want the test to run", got)
				}
				return
			}
			if !strings.HasPrefix(got, c.want[0]) {
				t.Fatalf("got %q, want %s...", got, c.want[0])
			}
			for _, w := range c.want[1:] {
				if !strings.Contains(got, w) {
					t.Fatalf("got %q, want it to contain %q", got, w)
				}
			}
		})
	}
}

func TestHaveTool(t *testing.T) {
	pathWith(t, "cpio")
	t.Run("present", func(t *testing.T) {
		t.Setenv("CI", "true")
		f := &fakeTB{}
		if !HaveTool(f, "cpio") || f.outcome(t) != "ran" || len(f.logs) != 0 {
			t.Fatalf("present tool: %+v", f)
		}
	})
	t.Run("missing, CI", func(t *testing.T) {
		t.Setenv("CI", "true")
		f := &fakeTB{}
		if HaveTool(f, "nft") {
			t.Fatal("HaveTool of a missing tool = true")
		}
		if got := f.outcome(t); !strings.HasPrefix(got, "fatal: nft not installed (apt-get install nftables") {
			t.Fatalf("got %q", got)
		}
	})
	t.Run("missing, not CI", func(t *testing.T) {
		t.Setenv("CI", "")
		f := &fakeTB{}
		if HaveTool(f, "nft") {
			t.Fatal("HaveTool of a missing tool = true")
		}
		if got := f.outcome(t); got != "ran" || len(f.logs) != 1 || !strings.Contains(f.logs[0], "nft not installed") {
			t.Fatalf("got %q, logs %q", got, f.logs)
		}
	})
}

func TestRequireFile(t *testing.T) {
	there := filepath.Join(t.TempDir(), "busybox")
	os.WriteFile(there, nil, 0o644)
	gone := filepath.Join(t.TempDir(), "busybox")
	t.Setenv("CI", "true")
	f := &fakeTB{}
	RequireFile(f, there, "busybox-static")
	if got := f.outcome(t); got != "ran" {
		t.Fatalf("existing file: %q", got)
	}
	f = &fakeTB{}
	RequireFile(f, gone, "busybox-static")
	if got := f.outcome(t); !strings.HasPrefix(got, "fatal: "+gone+" missing (apt-get install busybox-static;") {
		t.Fatalf("missing file: %q", got)
	}
}

func TestRequireRoot(t *testing.T) {
	t.Setenv("CI", "true")
	f := &fakeTB{}
	RequireRoot(f, "to do a thing")
	got := f.outcome(t)
	if os.Geteuid() == 0 {
		if got != "ran" {
			t.Fatalf("as root: %q", got)
		}
		return
	}
	if !strings.HasPrefix(got, "fatal: needs root to do a thing: run the tests as root") {
		t.Fatalf("as uid %d: %q", os.Geteuid(), got)
	}
}

// TestHelperMissingPrereq is run by TestRealTestUnderCI in a child test
// binary; on its own it does nothing (and passes, so it is never listed as
// skipped).
func TestHelperMissingPrereq(t *testing.T) {
	if os.Getenv("BANGER_TESTENV_HELPER") != "1" {
		return
	}
	RequireTool(t, "banger-no-such-tool")
	t.Log("RAN-PAST-THE-CHECK")
}

// TestRealTestUnderCI checks the real testing.T end to end, in a child
// process: under CI=true the test fails, otherwise it skips, and in
// neither case does it run past the check.
func TestRealTestUnderCI(t *testing.T) {
	for _, c := range []struct {
		ci      string
		wantErr bool
		want    string
	}{
		{"true", true, "--- FAIL: TestHelperMissingPrereq"},
		{"", false, "--- SKIP: TestHelperMissingPrereq"},
	} {
		t.Run("CI="+c.ci, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperMissingPrereq$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), "BANGER_TESTENV_HELPER=1", "CI="+c.ci)
			out, err := cmd.CombinedOutput()
			if (err != nil) != c.wantErr {
				t.Fatalf("child exit: %v, want failure %v:\n%s", err, c.wantErr, out)
			}
			s := string(out)
			if !strings.Contains(s, c.want) || !strings.Contains(s, "banger-no-such-tool not found on PATH") {
				t.Fatalf("child output lacks %q and the reason:\n%s", c.want, s)
			}
			if strings.Contains(s, "RAN-PAST-THE-CHECK") {
				t.Fatalf("the test ran past its failed check:\n%s", s)
			}
		})
	}
}
