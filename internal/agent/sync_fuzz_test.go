package agent

import (
	"bytes"
	"io"
	"testing"

	"banger/internal/guestproto"
)

// chunkReader hands out its bytes n at a time, then io.EOF.
type chunkReader struct {
	b []byte
	n int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := min(r.n, len(p), len(r.b))
	copy(p, r.b[:n])
	r.b = r.b[n:]
	return n, nil
}

// FuzzAwaitLine: the host's wait for the guest's sync answer reads
// whatever the channel holds (stale output, binary, a hostile guest). It
// succeeds exactly when a whole line equals the answer, however the bytes
// are split into reads.
func FuzzAwaitLine(f *testing.F) {
	want := guestproto.AgentSyncOK + "0011223344556677"
	for _, s := range []string{
		want + "\n", "junk\x00\xff\n" + want + "\n", want, want + "x\n", "x" + want + "\n", "\n\n" + want + "\r\n",
		want[:10] + "\n" + want[10:] + "\n", string(bytes.Repeat([]byte(want), 100)) + "\n" + want + "\n",
	} {
		f.Add([]byte(s), uint8(0))
		f.Add([]byte(s), uint8(7))
	}
	f.Fuzz(func(t *testing.T, data []byte, n uint8) {
		lines := bytes.Split(data, []byte("\n"))
		found := false
		for _, l := range lines[:len(lines)-1] { // the last one has no newline
			found = found || string(l) == want
		}
		err := awaitLine(&chunkReader{b: data, n: int(n)%4096 + 1}, want)
		if found != (err == nil) || err != nil && err != io.EOF {
			t.Fatalf("awaitLine(%.200q) = %v; a line equal to the answer: %v", data, err, found)
		}
	})
}
