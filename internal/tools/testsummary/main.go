// Command testsummary runs `go test -json` commands and prints what plain
// `go test` would (package ok/FAIL lines, a failing test's output, build
// errors) as it goes, then a summary: every skipped test with its reason
// ("skipped tests: none" when none), the failed tests and the failed
// packages' FAIL lines. make test runs the suite through it, so a test
// that skipped on a developer's machine (or, by mistake, in CI) is named at
// the end of the log instead of hiding behind an ok.
//
//	testsummary [-v] -- CMD [ARG...] [--- CMD [ARG...]]...
//	go test -json ./... | testsummary
//
// Commands run one after another and stop at the first that fails (as make
// would); their stdout must be a test2json stream (other lines are printed
// as they are), their stderr is passed through. The exit status is 0 only
// if every command exited 0 and no test, package or build failed. Read from
// stdin, only the failures in the stream set the status: prefer the
// command form, which also sees a go test that failed before any test ran.
//
// -v prints every output line as it comes, like go test -v.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
)

func main() {
	verbose := flag.Bool("v", false, "print every test's output as it comes, like go test -v")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: testsummary [-v] -- CMD [ARG...] [--- CMD [ARG...]]...\n       go test -json ./... | testsummary [-v]")
		flag.PrintDefaults()
	}
	flag.Parse()
	os.Exit(run(flag.Args(), *verbose, os.Stdin, os.Stdout, os.Stderr))
}

// splitCommands splits args at each lone "---".
func splitCommands(args []string) [][]string {
	var cmds [][]string
	cur := []string{}
	for _, a := range args {
		if a == "---" {
			if len(cur) > 0 {
				cmds = append(cmds, cur)
			}
			cur = []string{}
			continue
		}
		cur = append(cur, a)
	}
	if len(cur) > 0 {
		cmds = append(cmds, cur)
	}
	return cmds
}

// label marks the tests of every run after the first in the summary.
func label(i int, cmd []string) string {
	switch {
	case i == 0:
		return ""
	case slices.Contains(cmd, "-race"):
		return " (-race)"
	}
	return fmt.Sprintf(" (run %d)", i+1)
}

func run(args []string, verbose bool, stdin io.Reader, stdout, stderr io.Writer) int {
	cmds := splitCommands(args)
	if len(cmds) == 0 { // a stream on stdin
		s := newSummarizer(stdout)
		s.verbose = verbose
		err := s.consume(stdin)
		var notes []string
		if err != nil {
			notes = append(notes, fmt.Sprintf("FAIL: reading the test stream: %v", err))
		}
		if s.events == 0 {
			notes = append(notes, "FAIL: no test events on stdin (did go test run with -json?)")
		}
		report(stdout, []*summarizer{s}, notes)
		if err != nil || s.failed || s.events == 0 {
			fmt.Fprintln(stdout, "FAIL")
			return 1
		}
		fmt.Fprintln(stdout, "PASS")
		return 0
	}

	// An interrupt reaches go test through the terminal's process group as
	// well; a TERM is for us alone and is passed on. Either way the command
	// ends first, then the summary of what ran is printed.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)

	code := 0
	var runs []*summarizer
	var notes []string
	for i, argv := range cmds {
		if code != 0 {
			notes = append(notes, "not run (an earlier run failed): "+strings.Join(argv, " "))
			continue
		}
		s := newSummarizer(stdout)
		s.verbose, s.label = verbose, label(i, argv)
		runs = append(runs, s)
		fmt.Fprintf(stdout, "testsummary: %s\n", strings.Join(argv, " "))
		rc, err := runOne(argv, s, stderr, sigs)
		switch {
		case err != nil:
			notes = append(notes, fmt.Sprintf("FAIL: %s: %v", strings.Join(argv, " "), err))
			code = 1
		case rc != 0:
			if !s.failed {
				// Failed without a failing test (a setup error on stderr).
				notes = append(notes, fmt.Sprintf("FAIL: %s exited with status %d", strings.Join(argv, " "), rc))
			}
			code = rc
		case s.failed:
			code = 1
		}
	}
	report(stdout, runs, notes)
	if code != 0 {
		fmt.Fprintln(stdout, "FAIL")
		return code
	}
	fmt.Fprintln(stdout, "PASS")
	return 0
}

// runOne runs argv, its stdout into s, and returns its exit status.
func runOne(argv []string, s *summarizer, stderr io.Writer, sigs <-chan os.Signal) (int, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stderr = stderr
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case sig := <-sigs:
				cmd.Process.Signal(sig)
			case <-done:
				return
			}
		}
	}()
	readErr := s.consume(pipe)
	if readErr != nil {
		io.Copy(io.Discard, pipe)
	}
	err = cmd.Wait()
	close(done)
	if readErr != nil {
		return 0, readErr
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if rc := ee.ExitCode(); rc > 0 {
			return rc, nil
		}
		return 1, nil // killed by a signal
	}
	return 0, err
}
