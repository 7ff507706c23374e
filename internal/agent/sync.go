package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"banger/internal/guestproto"
)

// syncStream repeats its sync line: a guest that is still booting, or an
// old SSH session in the guest that swallows the first one, gets another.
// The old session is the common case on a live guest (a reconnect, a guest
// restored from a snapshot taken with a connection open) and it ends
// within milliseconds of reading the line, so the first repeats come fast
// (syncFast for syncFastFor); a booting guest then gets one every
// syncInterval. Lines are ~40 bytes.
const (
	syncFast     = 10 * time.Millisecond
	syncFastFor  = 500 * time.Millisecond
	syncInterval = 250 * time.Millisecond
)

// syncStream runs the resynchronization described at guestproto.AgentSync
// on a freshly connected agent stream. It returns when the guest is ready
// for SSH, or with ctx's error (the guest never answered: still booting,
// crashed). It closes conn when ctx ends.
func syncStream(ctx context.Context, conn net.Conn) error {
	var nb [8]byte
	rand.Read(nb[:])
	nonce := hex.EncodeToString(nb[:])
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	// The writer repeats the sync line until the reader has the answer; it
	// is joined before GO is written, so no sync line can follow GO.
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		start := time.Now()
		t := time.NewTimer(0)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			// A leading newline ends any partial line stale bytes left.
			if _, err := conn.Write([]byte("\n" + guestproto.AgentSync + nonce + "\n")); err != nil {
				return
			}
			t.Reset(syncDelay(time.Since(start)))
		}
	}()
	err := awaitLine(conn, guestproto.AgentSyncOK+nonce)
	close(done)
	wg.Wait()
	if err == nil {
		_, err = conn.Write([]byte(guestproto.AgentGo + nonce + "\n"))
	}
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("agent sync: guest did not answer: %w", ctx.Err())
		}
		return fmt.Errorf("agent sync: %w", err)
	}
	return nil
}

// syncDelay is the wait before the next sync line, elapsed into the sync.
func syncDelay(elapsed time.Duration) time.Duration {
	if elapsed < syncFastFor {
		return syncFast
	}
	return syncInterval
}

// awaitLine reads until a line equal to want, discarding everything else
// (stale output of an earlier session, binary or not). The guest sends
// nothing after that line until it gets GO, so chunked reads overrun
// nothing.
func awaitLine(r io.Reader, want string) error {
	buf := make([]byte, 4096)
	var line []byte
	for {
		n, err := r.Read(buf)
		for _, b := range buf[:n] {
			if b != '\n' {
				if len(line) <= len(want) {
					line = append(line, b)
				}
				continue
			}
			if bytes.Equal(line, []byte(want)) {
				return nil
			}
			line = line[:0]
		}
		if err != nil {
			return err
		}
	}
}
