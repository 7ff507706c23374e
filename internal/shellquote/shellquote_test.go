package shellquote

import (
	"os/exec"
	"testing"
)

// TestJoinRoundTrips hands each joined line to a real sh and checks it
// sees the same words.
func TestJoinRoundTrips(t *testing.T) {
	for _, argv := range [][]string{
		{"echo", "plain", "a=b", "x/y.z"},
		{"printf", "%s|", "it's", "", "two words", "$HOME", "`id`", "a\"b", "tab\there"},
	} {
		line := Join(argv)
		got, err := exec.Command("sh", "-c", "set -- "+line+`; for a in "$@"; do printf '[%s]' "$a"; done`).Output()
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		want := ""
		for _, a := range argv {
			want += "[" + a + "]"
		}
		if string(got) != want {
			t.Errorf("Join(%q) = %q: sh saw %s, want %s", argv, line, got, want)
		}
	}
	if got := Join([]string{"ls | wc -l"}); got != "ls | wc -l" {
		t.Errorf("a single word changed: %q", got)
	}
}
