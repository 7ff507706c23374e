package vmm

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// The guest's serial console is untrusted output: a guest that floods it
// must not fill the host's disk. Drivers that can hand the console to the
// host as a stream (QEMU's socket chardev) copy it through a ConsoleLog,
// which keeps at most two generations of ConsoleMaxBytes each:
// console.log (current) and console.log.1 (the one before).
//
// Offsets are logical: the count of bytes the guest wrote since the boot,
// across rotations, so `vm logs -f` can follow a rotating log. The logical
// offset at which console.log starts is kept in console.log.base.
const (
	ConsoleMaxBytes = 8 << 20
	consoleBase     = ".base"
	consoleOld      = ".1"
)

// ConsoleLog is a size-capped, rotating console log file.
type ConsoleLog struct {
	path string
	max  int64

	mu   sync.Mutex
	f    *os.File
	size int64 // bytes in the current file
	base int64 // logical offset of the current file's first byte
}

// OpenConsoleLog opens path for appending. fresh starts a new boot's log
// (removing the previous boot's generations); otherwise it appends (a
// daemon re-attaching to a running VM). max <= 0 means ConsoleMaxBytes.
func OpenConsoleLog(path string, max int64, fresh bool) (*ConsoleLog, error) {
	if max <= 0 {
		max = ConsoleMaxBytes
	}
	flags := os.O_WRONLY | os.O_CREATE | os.O_APPEND
	if fresh {
		for _, p := range []string{path + consoleOld, path + consoleBase} {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, err
			}
		}
		flags |= os.O_TRUNC
	}
	f, err := os.OpenFile(path, flags, 0o640)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &ConsoleLog{path: path, max: max, f: f, size: fi.Size(), base: readBase(path)}, nil
}

// Write appends p, rotating whenever the current file reaches the cap. It
// never fails for the guest's sake: a write error is returned, the bytes
// are dropped.
func (c *ConsoleLog) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for len(p) > 0 {
		if c.size >= c.max {
			if err := c.rotate(); err != nil {
				return n, err
			}
		}
		chunk := p
		if room := c.max - c.size; int64(len(chunk)) > room {
			chunk = chunk[:room]
		}
		w, err := c.f.Write(chunk)
		c.size += int64(w)
		n += w
		if err != nil {
			return n, err
		}
		p = p[w:]
	}
	return n, nil
}

// rotate moves the current file to .1 and starts an empty one. Caller
// holds c.mu.
func (c *ConsoleLog) rotate() error {
	c.f.Close()
	if err := os.Rename(c.path, c.path+consoleOld); err != nil {
		return fmt.Errorf("rotate console log: %w", err)
	}
	c.base += c.size
	if err := writeBase(c.path, c.base); err != nil {
		return err
	}
	f, err := os.OpenFile(c.path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	c.f, c.size = f, 0
	return nil
}

// Close closes the current file.
func (c *ConsoleLog) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.f.Close()
}

// PumpConsole copies the guest's console from conn into a ConsoleLog at
// path until conn ends (the VMM exited, or closed the stream), then closes
// both. It runs in its own goroutine; done is closed when it returns.
func PumpConsole(conn net.Conn, log *ConsoleLog) (done <-chan struct{}) {
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		defer log.Close()
		defer conn.Close()
		io.Copy(log, conn)
	}()
	return ch
}

func readBase(path string) int64 {
	b, err := os.ReadFile(path + consoleBase)
	if err != nil || len(b) > 32 {
		return 0
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

func writeBase(path string, base int64) error {
	tmp := path + consoleBase + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.FormatInt(base, 10)+"\n"), 0o640); err != nil {
		return err
	}
	return os.Rename(tmp, path+consoleBase)
}

// ReadConsole returns up to max bytes of the console log at path from the
// logical offset off, and the offset after them. Bytes rotated away are
// skipped: a reader that fell behind resumes at the oldest kept byte.
func ReadConsole(path string, off int64, max int) ([]byte, int64, error) {
	base := readBase(path)
	cur, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, off, nil
	}
	if err != nil {
		return nil, off, err
	}
	defer cur.Close()
	var out []byte
	if off < base {
		// Some of what is wanted is in .1 (or gone).
		if old, err := os.Open(path + consoleOld); err == nil {
			fi, err := old.Stat()
			if err == nil {
				oldStart := base - fi.Size()
				if off < oldStart {
					off = oldStart
				}
				b, _ := io.ReadAll(io.LimitReader(io.NewSectionReader(old, off-oldStart, fi.Size()), int64(max)))
				out = append(out, b...)
				off += int64(len(b))
			}
			old.Close()
		}
		if len(out) == max {
			return out, off, nil
		}
		off = base // .1 read to its end (or gone)
	}
	b, err := io.ReadAll(io.LimitReader(io.NewSectionReader(cur, off-base, 1<<62), int64(max-len(out))))
	out = append(out, b...)
	return out, off + int64(len(b)), err
}

// ConsoleSocket is the unix socket a VMM serves its console on, inside the
// VM's runtime dir (drivers that stream the console).
func ConsoleSocket(runtimeDir string) string { return filepath.Join(runtimeDir, "console.sock") }

// ConsoleFIFO is the named pipe a VMM whose console is its stdout
// (Firecracker) writes to, in the VM's runtime dir.
func ConsoleFIFO(runtimeDir string) string { return filepath.Join(runtimeDir, "console.fifo") }

// MakeConsoleFIFO makes a fresh console FIFO in runtimeDir and opens both
// ends without blocking: the read end for PumpConsoleFile, the write end
// (non-blocking, so a full pipe drops the guest's bytes instead of
// stalling the VMM) to hand to the VMM as stdout and then close. With no
// reader (no daemon) the VMM's writes fail with EPIPE: dropped, never
// written to the host's disk.
func MakeConsoleFIFO(runtimeDir string) (r, w *os.File, err error) {
	p := ConsoleFIFO(runtimeDir)
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, nil, err
	}
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		return nil, nil, fmt.Errorf("console fifo %s: %w", p, err)
	}
	if r, err = OpenConsoleFIFO(runtimeDir); err != nil {
		return nil, nil, err
	}
	if w, err = os.OpenFile(p, os.O_WRONLY|syscall.O_NONBLOCK, 0); err != nil {
		r.Close()
		return nil, nil, fmt.Errorf("console fifo %s: %w", p, err)
	}
	return r, w, nil
}

// OpenConsoleFIFO opens the read end of runtimeDir's console FIFO (a
// daemon re-attaching to a running VMM).
func OpenConsoleFIFO(runtimeDir string) (*os.File, error) {
	f, err := os.OpenFile(ConsoleFIFO(runtimeDir), os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("console fifo: %w", err)
	}
	return f, nil
}

// PumpConsoleFile is PumpConsole for a pipe: it copies r into log until
// every writer is gone (the VMM exited), then closes both.
func PumpConsoleFile(r *os.File, log *ConsoleLog) (done <-chan struct{}) {
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		defer log.Close()
		defer r.Close()
		io.Copy(log, r)
	}()
	return ch
}
