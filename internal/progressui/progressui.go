// Package progressui shows the progress notifications of long calls
// (pulls, builds, creates) in the CLI: bars, plain lines or JSON lines.
package progressui

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"

	"banger/api"
)

// Progress reaches the user in one of these forms, chosen by --progress:
//
//	auto   bars on a terminal (stdout and stderr both), else plain;
//	       JSON when the command prints JSON (-o json)
//	bar    bars: bytes, total, rate and ETA per download, one bar each
//	       (layers download in parallel), stage lines above them
//	plain  one line per stage, and one per finished download
//	json   one api.Progress JSON object per line (with a time)
//	none   nothing
//
// Progress always goes to stderr, so stdout holds only the command's
// result: `-o json` output stays one document a script can parse.
const (
	Auto  = "auto"
	Bar   = "bar"
	Plain = "plain"
	JSON  = "json"
	None  = "none"
)

// CheckMode validates a --progress value.
func CheckMode(m string) error {
	switch m {
	case Auto, Bar, Plain, JSON, None:
		return nil
	}
	return fmt.Errorf("invalid --progress %q: use auto, bar, plain, json or none", m)
}

// Sink shows one call's progress; Finish ends what it drew (bars
// completed or dropped) before the command prints its result.
type Sink interface {
	Show(api.Progress)
	Finish()
}

// Resolve picks the sink for mode; jsonOut is the command's -o
// json, stdoutTTY and errTTY whether those are terminals.
func Resolve(mode string, jsonOut, stdoutTTY, errTTY bool, w io.Writer) Sink {
	if mode == Auto {
		switch {
		case jsonOut:
			mode = JSON
		case stdoutTTY && errTTY:
			mode = Bar
		default:
			mode = Plain
		}
	}
	switch mode {
	case JSON:
		return &jsonProgress{w: w}
	case Bar:
		return NewBar(w, 0)
	case None:
		return nopProgress{}
	}
	return &plainProgress{w: w}
}

// IsTTY reports whether f is a terminal.
func IsTTY(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }

type nopProgress struct{}

func (nopProgress) Show(api.Progress) {}
func (nopProgress) Finish()           {}

// isBytes: the event counts bytes of a download (a bar), not items.
func isBytes(ev api.Progress) bool { return ev.Unit == api.UnitBytes && (ev.Total > 0 || ev.Done > 0) }

// stageLine is the plain form of an event that is not a byte count.
func stageLine(ev api.Progress) string {
	s := "==> " + ev.Stage
	if ev.Message != "" {
		s += ": " + ev.Message
	}
	switch {
	case ev.Unit == api.UnitBytes && ev.Done > 0:
		s += " (" + HumanBytes(ev.Done) + ")"
	case ev.Total > 0:
		s += fmt.Sprintf(" (%d/%d)", ev.Done, ev.Total)
	}
	return s
}

// plainProgress prints stage lines, and a download once, when it ends.
type plainProgress struct {
	mu sync.Mutex
	w  io.Writer
}

func (p *plainProgress) Show(ev api.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if isBytes(ev) {
		if ev.Total > 0 && ev.Done >= ev.Total {
			fmt.Fprintf(p.w, "  %s %s: %s\n", ev.Stage, ev.Message, HumanBytes(ev.Done))
		}
		return
	}
	fmt.Fprintln(p.w, stageLine(ev))
}

func (p *plainProgress) Finish() {}

// jsonProgress writes each event as a JSON line, with the time it came.
type jsonProgress struct {
	mu sync.Mutex
	w  io.Writer
}

type progressLine struct {
	Time string `json:"time"`
	api.Progress
}

func (p *jsonProgress) Show(ev api.Progress) {
	b, err := json.Marshal(progressLine{Time: time.Now().UTC().Format(time.RFC3339Nano), Progress: ev})
	if err != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "%s\n", b)
}

func (p *jsonProgress) Finish() {}

// barProgress draws one mpb bar per download (stage + message) and
// prints other events as lines above the bars. mpb rather than a
// single-bar library: image layers download in parallel, each with its
// own bar, as docker pull shows them.
type barProgress struct {
	mu    sync.Mutex
	w     io.Writer
	width int // 0: the terminal's
	p     *mpb.Progress
	bars  map[string]*mpb.Bar
	total map[string]int64 // each bar's total as last set
}

// NewBar draws bars on w, width columns wide (0: the terminal's).
func NewBar(w io.Writer, width int) *barProgress {
	return &barProgress{w: w, width: width}
}

// container starts the mpb container on the first bar. b.mu must be held.
func (b *barProgress) container() *mpb.Progress {
	if b.p == nil {
		opts := []mpb.ContainerOption{mpb.WithOutput(b.w), mpb.WithRefreshRate(150 * time.Millisecond)}
		if b.width > 0 {
			// A fixed width: tests, which draw into a buffer without a
			// terminal to ask for its size.
			opts = append(opts, mpb.WithWidth(b.width))
		}
		opts = append(opts, mpb.WithAutoRefresh())
		b.p = mpb.New(opts...)
		b.bars = map[string]*mpb.Bar{}
		b.total = map[string]int64{}
	}
	return b.p
}

func (b *barProgress) Show(ev api.Progress) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !isBytes(ev) {
		line := stageLine(ev) + "\n"
		if b.p != nil && b.allCompleted() {
			// mpb stops drawing once every bar is complete, and drops
			// what is written above them after that: end the container,
			// then print the line plainly.
			b.p.Wait()
			b.p, b.bars, b.total = nil, nil, nil
		}
		if b.p != nil {
			b.p.Write([]byte(line)) // above the bars
		} else {
			io.WriteString(b.w, line)
		}
		return
	}
	key := ev.Stage + "\x00" + ev.Message
	bar, ok := b.bars[key]
	if !ok {
		if ev.Total > 0 && ev.Done >= ev.Total && b.p == nil {
			// Over before it began (a cached layer): a line, no bar.
			io.WriteString(b.w, stageLine(ev)+"\n")
			return
		}
		bar = b.container().AddBar(max(ev.Total, 0),
			mpb.PrependDecorators(
				decor.Name(label(ev), decor.WC{W: 34, C: decor.DindentRight | decor.DextraSpace}),
				decor.Counters(decor.SizeB1024(0), "% .1f / % .1f", decor.WC{W: 22}),
			),
			mpb.AppendDecorators(
				decor.AverageSpeed(decor.SizeB1024(0), "% .1f", decor.WC{W: 12}),
				decor.OnComplete(decor.AverageETA(decor.ET_STYLE_GO, decor.WC{W: 6}), "done"),
			),
		)
		b.bars[key] = bar
	}
	if ev.Total > 0 && ev.Total != b.total[key] {
		bar.SetTotal(ev.Total, false)
		b.total[key] = ev.Total
	}
	bar.SetCurrent(ev.Done)
	if ev.Total > 0 && ev.Done >= ev.Total {
		bar.SetTotal(ev.Total, true)
	}
}

// allCompleted says whether every bar has reached its end. b.mu must be held.
func (b *barProgress) allCompleted() bool {
	for _, bar := range b.bars {
		if !bar.Completed() {
			return false
		}
	}
	return true
}

// label is a bar's name: stage and message, cut to fit its column.
func label(ev api.Progress) string {
	s := ev.Stage + " " + ev.Message
	if len(s) > 33 {
		s = s[:30] + "..."
	}
	return s
}

// finish completes bars whose total is known and reached, drops the rest
// (the call ended without them: an error or a cancel), and waits for the
// last frame.
func (b *barProgress) Finish() {
	b.mu.Lock()
	p, bars := b.p, b.bars
	b.p, b.bars, b.total = nil, nil, nil
	b.mu.Unlock()
	if p == nil {
		return
	}
	for _, bar := range bars {
		if !bar.Completed() {
			bar.Abort(false)
		}
	}
	p.Wait()
}

// HumanBytes is n in B, KiB, MiB, ...
func HumanBytes(n int64) string {
	const u = 1024
	if n < u {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(u), 0
	for m := n / u; m >= u && exp < 4; m /= u {
		div *= u
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTP"[exp])
}
