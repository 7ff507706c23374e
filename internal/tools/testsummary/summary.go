package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
)

// event is one line of a `go test -json` (test2json) stream.
type event struct {
	Action      string
	Package     string
	Test        string
	Output      string
	ImportPath  string // build-output, build-fail
	FailedBuild string
}

// reasonLines is how many of a skipped test's last output lines the
// summary keeps as its reason (the skip message is the last).
const reasonLines = 6

// maxBuffered bounds what is kept of one running test's output; a
// failing test prints its last maxBuffered lines.
const maxBuffered = 5000

type testKey struct{ pkg, test string }

type testBuf struct {
	lines   []string
	dropped int
}

func (b *testBuf) add(s string) {
	b.lines = append(b.lines, s)
	if len(b.lines) > maxBuffered {
		n := len(b.lines) - maxBuffered
		b.dropped += n
		b.lines = append(b.lines[:0:0], b.lines[n:]...)
	}
}

// skipped is one skipped test, with its reason (its last output lines).
type skipped struct {
	pkg, test, label string
	reason           []string
}

// summarizer turns test2json events into go test's plain (non -v) output
// as they arrive (package ok/FAIL lines, a failing test's output, build
// errors) and collects what the closing summary lists.
type summarizer struct {
	out     io.Writer
	verbose bool   // print every output line as it comes, like go test -v
	label   string // appended to listed tests of this run, e.g. " (-race)"

	running map[testKey]*testBuf
	pkgOut  map[string]*testBuf

	skips       []skipped
	failedTests []string
	failedPkgs  []string // their FAIL lines
	okPkgs      int
	failed      bool // a test, a package or a build failed
	events      int
}

func newSummarizer(out io.Writer) *summarizer {
	return &summarizer{out: out, running: map[testKey]*testBuf{}, pkgOut: map[string]*testBuf{}}
}

// consume reads a test2json stream to its end. A line that is not a JSON
// event (stray output) is printed as it is.
func (s *summarizer) consume(r io.Reader) error {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			s.line(line)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (s *summarizer) line(line string) {
	var ev event
	if !strings.HasPrefix(line, "{") || json.Unmarshal([]byte(line), &ev) != nil || ev.Action == "" {
		s.print(line)
		return
	}
	s.events++
	s.event(ev)
}

func (s *summarizer) print(text string) {
	if text != "" && !strings.HasSuffix(text, "\n") {
		text += "\n"
	}
	io.WriteString(s.out, text)
}

func (s *summarizer) event(ev event) {
	switch ev.Action {
	case "build-output":
		s.print(ev.Output)
		return
	case "build-fail":
		s.failed = true
		return
	}
	if ev.Test == "" {
		s.packageEvent(ev)
		return
	}
	k := testKey{ev.Package, ev.Test}
	b := s.running[k]
	if b == nil {
		b = &testBuf{}
		s.running[k] = b
	}
	switch ev.Action {
	case "output":
		if s.verbose {
			s.print(ev.Output)
		}
		b.add(ev.Output)
	case "pass":
		delete(s.running, k)
	case "fail":
		delete(s.running, k)
		s.failed = true
		s.failedTests = append(s.failedTests, ev.Package+" "+ev.Test+s.label)
		if !s.verbose {
			s.flush(b)
		}
	case "skip":
		delete(s.running, k)
		s.skips = append(s.skips, skipped{pkg: ev.Package, test: ev.Test, label: s.label, reason: reason(b.lines)})
	}
}

func (s *summarizer) packageEvent(ev event) {
	b := s.pkgOut[ev.Package]
	if b == nil {
		b = &testBuf{}
		s.pkgOut[ev.Package] = b
	}
	switch ev.Action {
	case "output":
		if s.verbose {
			s.print(ev.Output)
		}
		b.add(ev.Output)
		return
	case "pass", "skip", "fail":
	default:
		return
	}
	delete(s.pkgOut, ev.Package)
	// Tests that never reported an end (the binary died under them).
	var left []testKey
	for k := range s.running {
		if k.pkg == ev.Package {
			left = append(left, k)
		}
	}
	sort.Slice(left, func(i, j int) bool { return left[i].test < left[j].test })
	for _, k := range left {
		if ev.Action == "fail" && !s.verbose {
			s.flush(s.running[k])
		}
		delete(s.running, k)
	}
	switch ev.Action {
	case "pass":
		s.okPkgs++
		if !s.verbose { // go test prints only the ok line of a passing package
			for _, l := range b.lines {
				if strings.HasPrefix(l, "ok ") {
					s.print(l)
				}
			}
		}
	case "skip": // no test files
		if !s.verbose {
			s.flush(b)
		}
	case "fail":
		s.failed = true
		if !s.verbose {
			s.flush(b)
		}
		line := "FAIL\t" + ev.Package
		for _, l := range b.lines {
			if strings.HasPrefix(l, "FAIL\t") {
				line = strings.TrimRight(l, "\n")
			}
		}
		s.failedPkgs = append(s.failedPkgs, line+s.label)
	}
}

func (s *summarizer) flush(b *testBuf) {
	if b.dropped > 0 {
		s.print(fmt.Sprintf("    [... %d earlier lines left out]", b.dropped))
	}
	for _, l := range b.lines {
		s.print(l)
	}
}

// reason is a skipped test's output less go test's framing lines (=== RUN,
// --- SKIP, ...): its last reasonLines lines, the skip message last.
func reason(lines []string) []string {
	var r []string
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- SKIP: ") {
			continue
		}
		// t.Log's own indent goes; a message's continuation lines keep
		// theirs.
		r = append(r, strings.TrimPrefix(strings.TrimRight(l, "\r\n"), "    "))
	}
	if len(r) > reasonLines {
		r = append([]string{fmt.Sprintf("[... %d earlier lines]", len(r)-reasonLines)}, r[len(r)-reasonLines:]...)
	}
	return r
}

// report writes the closing summary of every run: skipped tests (or
// "skipped tests: none"), failed tests and the failed packages' FAIL lines.
func report(w io.Writer, runs []*summarizer, notes []string) {
	fmt.Fprintln(w)
	fmt.Fprintln(w, "==================== test summary ====================")
	var skips []skipped
	var failedTests, failedPkgs []string
	ok := 0
	for _, s := range runs {
		skips = append(skips, s.skips...)
		failedTests = append(failedTests, s.failedTests...)
		failedPkgs = append(failedPkgs, s.failedPkgs...)
		ok += s.okPkgs
	}
	if len(skips) == 0 {
		fmt.Fprintln(w, "skipped tests: none")
	} else {
		fmt.Fprintf(w, "skipped tests: %d\n", len(skips))
		for _, sk := range skips {
			fmt.Fprintf(w, "  %s %s%s\n", sk.pkg, sk.test, sk.label)
			for _, l := range sk.reason {
				fmt.Fprintf(w, "      %s\n", l)
			}
			if len(sk.reason) == 0 {
				fmt.Fprintln(w, "      (no reason given)")
			}
		}
	}
	if len(failedTests) > 0 {
		fmt.Fprintf(w, "failed tests: %d\n", len(failedTests))
		for _, t := range failedTests {
			fmt.Fprintf(w, "  %s\n", t)
		}
	}
	fmt.Fprintf(w, "packages ok: %d\n", ok)
	for _, n := range notes {
		fmt.Fprintln(w, n)
	}
	for _, l := range failedPkgs {
		fmt.Fprintln(w, l)
	}
}
