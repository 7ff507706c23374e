package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// The recorded streams are real `go test -json ./...` output of a small
// module (testdata/README): mixed.json has a passing package with a
// skipped subtest, a failing test, a build failure, a test that panics, a
// package without tests and one whose tests skip; pass.json passes.

func golden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test -run %s -update rewrites it):\n%s", p, t.Name(), got)
	}
}

func runStdin(t *testing.T, file string, verbose bool) (string, int) {
	t.Helper()
	in, err := os.Open(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	var out, errb bytes.Buffer
	rc := run(nil, verbose, in, &out, &errb)
	if errb.Len() > 0 {
		t.Errorf("stderr: %s", errb.String())
	}
	return out.String(), rc
}

func contains(t *testing.T, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}

func TestMixedStream(t *testing.T) {
	out, rc := runStdin(t, "mixed.json", false)
	if rc == 0 {
		t.Errorf("exit status 0 for a stream with failures")
	}
	golden(t, "mixed.golden", out)
	// What the golden file must show, spelled out.
	contains(t, out,
		// build errors, a failing test's output, package lines
		"broken/broken_test.go:5:40: cannot use",
		"    bad_test.go:8: want 2, got 3\n--- FAIL: TestBroken",
		"FAIL\texample.com/rec/bad\t",
		"ok  \texample.com/rec/good\t",
		"panic: assignment to entry in nil map",
		// the summary
		"skipped tests: 3\n",
		"  example.com/rec/good TestSubs/b\n      good_test.go:8: sub b: no widget here\n",
		"  example.com/rec/skippy TestNeedsRoot\n",
		"needs root to create a network namespace",
		"      skip_test.go:10: apt-get download foo failed: exit status 100\n          E: Unable to locate package foo\n",
		"failed tests: 2\n  example.com/rec/bad TestBroken\n  example.com/rec/panicky TestBoom\n",
		"FAIL\texample.com/rec/broken [build failed]\nFAIL\texample.com/rec/panicky\t0.018s\nFAIL\n",
	)
	if strings.Contains(out, "chatter from a passing test") || strings.Contains(out, "--- PASS") {
		t.Errorf("a passing test's output is printed:\n%s", out)
	}
	if !strings.HasSuffix(out, "\nFAIL\n") {
		t.Errorf("output does not end in FAIL")
	}
}

func TestPassStream(t *testing.T) {
	out, rc := runStdin(t, "pass.json", false)
	if rc != 0 {
		t.Errorf("exit status %d for a passing stream", rc)
	}
	golden(t, "pass.golden", out)
	contains(t, out, "ok  \texample.com/rec/plain\t", "skipped tests: none\n", "packages ok: 1\n")
	if !strings.HasSuffix(out, "\nPASS\n") {
		t.Errorf("output does not end in PASS")
	}
}

func TestVerbose(t *testing.T) {
	out, _ := runStdin(t, "mixed.json", true)
	contains(t, out, "chatter from a passing test", "--- PASS: TestOK", "skipped tests: 3\n")
	if n := strings.Count(out, "want 2, got 3"); n != 1 {
		t.Errorf("a failing test's output printed %d times, want once", n)
	}
}

// Only a build failure: the stream has no failing test, yet it fails.
func TestBuildFailureOnly(t *testing.T) {
	var lines []string
	for _, l := range strings.SplitAfter(readFile(t, "mixed.json"), "\n") {
		if strings.Contains(l, "rec/broken") {
			lines = append(lines, l)
		}
	}
	var out bytes.Buffer
	if rc := run(nil, false, strings.NewReader(strings.Join(lines, "")), &out, &out); rc == 0 {
		t.Errorf("exit 0 for a build failure:\n%s", out.String())
	}
	contains(t, out.String(), "cannot use", "skipped tests: none", "packages ok: 0", "FAIL\texample.com/rec/broken [build failed]\nFAIL\n")
}

func TestNoEventsFails(t *testing.T) {
	var out bytes.Buffer
	if rc := run(nil, false, strings.NewReader("go: cannot find main module\n"), &out, &out); rc == 0 {
		t.Errorf("exit 0 with no test events:\n%s", out.String())
	}
	contains(t, out.String(), "go: cannot find main module\n", "no test events")
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Command mode: the test binary stands in for go test (fakeGoTest); it
// prints a recorded stream and exits with the status it is told.
const fakeEnv = "TESTSUMMARY_FAKE"

func TestMain(m *testing.M) {
	if v := os.Getenv(fakeEnv); v != "" {
		os.Exit(fakeGoTest(strings.Split(v, ",")))
	}
	os.Exit(m.Run())
}

// fakeGoTest's args: a testdata file (or "-" for none) and an exit status.
func fakeGoTest(args []string) int {
	if args[0] != "-" {
		b, err := os.ReadFile(filepath.Join("testdata", args[0]))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 3
		}
		os.Stdout.Write(b)
	}
	fmt.Fprintln(os.Stderr, "fake go test on stderr")
	var rc int
	fmt.Sscan(args[1], &rc)
	return rc
}

// fake is a command line running the fake go test: env FAKE=file,rc test-binary.
func fake(file string, rc int, extra ...string) []string {
	exe, _ := os.Executable()
	return append([]string{"env", fmt.Sprintf("%s=%s,%d", fakeEnv, file, rc), exe, "-test.run=^$"}, extra...)
}

func runCmds(t *testing.T, cmds ...[]string) (string, string, int) {
	t.Helper()
	var args []string
	for i, c := range cmds {
		if i > 0 {
			args = append(args, "---")
		}
		args = append(args, c...)
	}
	var out, errb bytes.Buffer
	rc := run(args, false, strings.NewReader(""), &out, &errb)
	return out.String(), errb.String(), rc
}

func TestCommands(t *testing.T) {
	t.Run("a later run's tests are labelled", func(t *testing.T) {
		out, stderr, rc := runCmds(t, fake("pass.json", 0), fake("mixed.json", 0, "-race"))
		// The stream fails (mixed.json) even though the command exits 0.
		if rc != 1 {
			t.Errorf("rc = %d, want 1", rc)
		}
		contains(t, out, "  example.com/rec/good TestSubs/b (-race)\n", "  example.com/rec/bad TestBroken (-race)\n", "FAIL\texample.com/rec/bad\t0.017s (-race)\n")
		if strings.Count(stderr, "fake go test on stderr") != 2 {
			t.Errorf("stderr not passed through: %q", stderr)
		}
	})
	t.Run("passing", func(t *testing.T) {
		out, _, rc := runCmds(t, fake("pass.json", 0), fake("pass.json", 0, "-race"))
		if rc != 0 {
			t.Errorf("rc = %d, want 0:\n%s", rc, out)
		}
		contains(t, out, "skipped tests: none\n", "packages ok: 2\n", "\nPASS\n")
	})
	t.Run("status kept, later runs not run", func(t *testing.T) {
		// go test failing before any test ran: nothing on stdout, status 2.
		out, _, rc := runCmds(t, fake("-", 2), fake("pass.json", 0, "-race"))
		if rc != 2 {
			t.Errorf("rc = %d, want 2", rc)
		}
		contains(t, out, "exited with status 2", "not run (an earlier run failed): env", "skipped tests: none", "\nFAIL\n")
		if strings.Contains(out, "ok  \texample.com/rec/plain") {
			t.Errorf("the second command ran:\n%s", out)
		}
	})
	t.Run("failing stream, failing status", func(t *testing.T) {
		out, _, rc := runCmds(t, fake("mixed.json", 1))
		if rc != 1 {
			t.Errorf("rc = %d, want 1", rc)
		}
		if strings.Contains(out, "exited with status") {
			t.Errorf("a failure the stream explains is noted again:\n%s", out)
		}
	})
	t.Run("missing command", func(t *testing.T) {
		out, _, rc := runCmds(t, []string{"/nonexistent/go", "test"})
		if rc == 0 {
			t.Errorf("rc = 0 for a command that cannot start")
		}
		contains(t, out, "FAIL: /nonexistent/go test:")
	})
}

func TestSplitCommands(t *testing.T) {
	got := fmt.Sprint(splitCommands([]string{"---", "go", "test", "---", "---", "env", "X=1", "go", "---"}))
	if want := "[[go test] [env X=1 go]]"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}
