package main

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"banger/internal/guestproto"
)

// handshakeRW reads from r and records what is written.
type handshakeRW struct {
	r *bytes.Reader
	w bytes.Buffer
}

func (h *handshakeRW) Read(p []byte) (int, error)  { return h.r.Read(p) }
func (h *handshakeRW) Write(p []byte) (int, error) { return h.w.Write(p) }

// FuzzAgentHandshake: the guest's half of the agent resynchronization
// reads whatever the channel holds (stale bytes, the host's sync lines).
// Checked against a plain model of the protocol: the guest answers each
// new nonce once, succeeds exactly at the first GO for the nonce it
// answered last, ignores lines over 128 bytes, and never reads a byte past
// the GO line (those are the SSH stream's).
func FuzzAgentHandshake(f *testing.F) {
	sync, ok, gogo := guestproto.AgentSync, guestproto.AgentSyncOK, guestproto.AgentGo
	for _, s := range []string{
		sync + "n1\n" + gogo + "n1\nSSH-2.0-x\r\n",
		"stale\x00\xff\n" + sync + "n1\n" + sync + "n1\n" + sync + "n2\n" + gogo + "n1\n" + gogo + "n2\n",
		gogo + "\n" + sync + "\n" + gogo + "n\n", sync + strings.Repeat("x", 200) + "\n" + gogo + strings.Repeat("x", 200) + "\n",
		sync + "a\n" + gogo + "a", sync + "a\r\n" + gogo + "a\r\n", ok + "a\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// The model.
		var wantW bytes.Buffer
		wantW.WriteString("\n")
		nonce, done, rest := "", false, []byte(nil)
		for in := data; !done; {
			i := bytes.IndexByte(in, '\n')
			if i < 0 {
				break
			}
			s := string(in[:i])
			in = in[i+1:]
			switch {
			case len(s) > 128:
			case strings.HasPrefix(s, sync):
				if n := s[len(sync):]; n != "" && n != nonce {
					nonce = n
					wantW.WriteString(ok + n + "\n")
				}
			case nonce != "" && s == gogo+nonce:
				done, rest = true, in
			}
		}

		rw := &handshakeRW{r: bytes.NewReader(data)}
		err := agentHandshake(rw)
		if done != (err == nil) || err != nil && err != io.EOF {
			t.Fatalf("agentHandshake(%.200q) = %v, want success %v", data, err, done)
		}
		if !bytes.Equal(rw.w.Bytes(), wantW.Bytes()) {
			t.Fatalf("agentHandshake(%.200q) wrote %.200q, want %.200q", data, rw.w.Bytes(), wantW.Bytes())
		}
		if left, _ := io.ReadAll(rw.r); done && !bytes.Equal(left, rest) {
			t.Fatalf("agentHandshake(%.200q) left %.200q unread, want %.200q", data, left, rest)
		}
	})
}
