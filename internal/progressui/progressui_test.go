package progressui

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"banger/api"
)

// pullEvents is a pull as the daemon reports it: stages, two layers
// downloading in parallel, a cached one, a count stage.
var pullEvents = []api.Progress{
	{Stage: "resolve", Message: "registry.test/busybox:latest"},
	{Stage: "layer", Message: "aaaaaaaaaaaa", Done: 1 << 20, Total: 4 << 20, Unit: api.UnitBytes},
	{Stage: "layer", Message: "bbbbbbbbbbbb", Done: 512 << 10, Total: 2 << 20, Unit: api.UnitBytes},
	{Stage: "layer", Message: "cccccccccccc cached", Done: 3 << 20, Total: 3 << 20, Unit: api.UnitBytes},
	{Stage: "layer", Message: "aaaaaaaaaaaa", Done: 4 << 20, Total: 4 << 20, Unit: api.UnitBytes},
	{Stage: "layer", Message: "bbbbbbbbbbbb", Done: 2 << 20, Total: 2 << 20, Unit: api.UnitBytes},
	{Stage: "apply", Message: "aaaaaaaaaaaa", Done: 1, Total: 3},
	{Stage: "mkfs", Message: "rootfs.ext4"},
}

func TestPlainProgress(t *testing.T) {
	var buf bytes.Buffer
	s := Resolve(Auto, false, false, false, &buf) // not a terminal
	for _, ev := range pullEvents {
		s.Show(ev)
	}
	s.Finish()
	want := `==> resolve: registry.test/busybox:latest
  layer cccccccccccc cached: 3.0MiB
  layer aaaaaaaaaaaa: 4.0MiB
  layer bbbbbbbbbbbb: 2.0MiB
==> apply: aaaaaaaaaaaa (1/3)
==> mkfs: rootfs.ext4
`
	if buf.String() != want {
		t.Fatalf("plain progress:\n%s\nwant:\n%s", buf.String(), want)
	}
	// A terminal on stderr but not on stdout (piped output) is plain too.
	if _, ok := Resolve(Auto, false, false, true, &buf).(*plainProgress); !ok {
		t.Fatal("stdout not a terminal: want plain progress")
	}
}

func TestJSONProgress(t *testing.T) {
	var buf bytes.Buffer
	// -o json picks JSON lines even on a terminal.
	s := Resolve(Auto, true, true, true, &buf)
	for _, ev := range pullEvents {
		s.Show(ev)
	}
	s.Finish()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != len(pullEvents) {
		t.Fatalf("%d JSON lines for %d events:\n%s", len(lines), len(pullEvents), buf.String())
	}
	for i, l := range lines {
		var got struct {
			Time string `json:"time"`
			api.Progress
		}
		if err := json.Unmarshal([]byte(l), &got); err != nil {
			t.Fatalf("line %d %q: %v", i, l, err)
		}
		if got.Progress != pullEvents[i] || got.Time == "" {
			t.Fatalf("line %d = %+v, want %+v with a time", i, got, pullEvents[i])
		}
	}
}

// TestBarProgress draws into a buffer as on an 100-column terminal: each
// download gets a bar with bytes, total, rate and ETA (or done), stages
// print as lines.
func TestBarProgress(t *testing.T) {
	var buf bytes.Buffer
	s := NewBar(&buf, 100)
	for _, ev := range pullEvents {
		s.Show(ev)
	}
	s.Finish()
	out := regexp.MustCompile("\x1b\\[[0-9;]*[A-Za-z]").ReplaceAllString(buf.String(), "")
	for _, want := range []string{
		"==> resolve: registry.test/busybox:latest",
		"==> apply: aaaaaaaaaaaa (1/3)",
		"==> mkfs: rootfs.ext4",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	for layer, size := range map[string]string{"aaaaaaaaaaaa": "4.0", "bbbbbbbbbbbb": "2.0", "cccccccccccc cached": "3.0"} {
		// The last frame of each bar: full, with its total, then done.
		re := regexp.MustCompile(`layer ` + layer + `\s+` + size + ` MiB / ` + size + ` MiB \[=+\]\s+done`)
		if !re.MatchString(out) {
			t.Errorf("no finished bar for %s in:\n%s", layer, out)
		}
	}

	// A cached layer before any download: a line, no bar.
	var cached bytes.Buffer
	s = NewBar(&cached, 100)
	s.Show(api.Progress{Stage: "layer", Message: "dddddddddddd cached", Done: 1 << 20, Total: 1 << 20, Unit: api.UnitBytes})
	s.Finish()
	if got := cached.String(); got != "==> layer: dddddddddddd cached (1.0MiB)\n" {
		t.Fatalf("cached layer alone: %q", got)
	}

	// While running, a bar shows the rate and an ETA; a call that ends
	// before the download does drops the bar (no "done").
	var run bytes.Buffer
	s = NewBar(&run, 100)
	ev := api.Progress{Stage: "download", Message: "linux-image", Done: 10 << 20, Total: 40 << 20, Unit: api.UnitBytes}
	s.Show(ev)
	time.Sleep(400 * time.Millisecond) // frames are drawn every 150 ms
	ev.Done = 20 << 20
	s.Show(ev)
	time.Sleep(400 * time.Millisecond)
	s.Finish()
	got := regexp.MustCompile("\x1b\\[[0-9;]*[A-Za-z]").ReplaceAllString(run.String(), "")
	if !regexp.MustCompile(`download linux-image\s+20.0 MiB / 40.0 MiB \[=+[^\]]*\]\s+\d+(\.\d)? [KMG]iB/s\s+\d+(\.\d+)?(ms|s|m)`).MatchString(got) || strings.Contains(got, "done") {
		t.Fatalf("a running bar (rate, ETA, no done):\n%s", got)
	}
}

func TestProgressModeFlag(t *testing.T) {
	for _, m := range []string{"auto", "bar", "plain", "json", "none"} {
		if err := CheckMode(m); err != nil {
			t.Fatalf("%s: %v", m, err)
		}
	}
	if err := CheckMode("fancy"); err == nil || !strings.Contains(err.Error(), `"fancy"`) {
		t.Fatalf("fancy: %v", err)
	}
}
