package daemon

import (
	"bytes"
	"sync"
)

// MaxExecOutput bounds each of stdout and stderr that vm.exec collects
// for its reply: a guest printing gigabytes must not grow the daemon.
// (`banger vm exec` streams through vm.proxy instead and has no cap.) In
// the JSON reply a byte takes at most 6, so a reply stays under 50 MiB.
const MaxExecOutput = 4 << 20

// capBuffer keeps the first max bytes written to it. The first write past
// max marks it full and calls onFull (which stops the command); what
// follows is discarded, never an error, so the SSH session drains.
type capBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	max    int
	full   bool
	onFull func()
}

func (c *capBuffer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := c.max - c.b.Len(); len(p) > room {
		if !c.full {
			c.b.Write(p[:max(room, 0)])
			c.full = true
			if c.onFull != nil {
				c.onFull()
			}
		}
		return len(p), nil
	}
	return c.b.Write(p)
}

func (c *capBuffer) String() string { c.mu.Lock(); defer c.mu.Unlock(); return c.b.String() }

func (c *capBuffer) isFull() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.full }
