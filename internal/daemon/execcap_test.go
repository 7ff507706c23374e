package daemon

import (
	"bytes"
	"testing"
)

// capBuffer keeps max bytes, calls onFull once, and never fails a write
// (so the session drains while the command is stopped).
func TestCapBuffer(t *testing.T) {
	calls := 0
	c := &capBuffer{max: 10, onFull: func() { calls++ }}
	for i := 0; i < 5; i++ {
		if n, err := c.Write([]byte("abcd")); n != 4 || err != nil {
			t.Fatalf("write %d: %d %v", i, n, err)
		}
	}
	if c.String() != "abcdabcdab" || !c.isFull() || calls != 1 {
		t.Fatalf("got %q full=%v calls=%d", c.String(), c.isFull(), calls)
	}
	c = &capBuffer{max: 8}
	c.Write(bytes.Repeat([]byte("x"), 8))
	if c.isFull() || c.String() != "xxxxxxxx" {
		t.Fatalf("exactly max is not full: %v %q", c.isFull(), c.String())
	}
}
