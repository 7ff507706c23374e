package main

import (
	"context"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/agent"
)

// chardev models QEMU's unix-socket chardev in front of a virtio-serial
// port: one guest byte stream that outlives host connections. Guest output
// that arrives while no host is attached is held and delivered to the next
// host, as QEMU does; the guest is not told when a host leaves, which is
// the race a real port has when a host reconnects quickly.
type chardev struct {
	guest net.Conn // guest end of the stream (the port)
	dev   net.Conn // chardev's end

	mu      sync.Mutex
	cur     net.Conn // current host connection's chardev side
	pending []byte
}

func newChardev(t *testing.T) *chardev {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "s")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	cd := &chardev{guest: conn(fds[0]), dev: conn(fds[1])}
	t.Cleanup(func() { cd.guest.Close(); cd.dev.Close() })
	go func() { // guest -> current host, or held
		buf := make([]byte, 32<<10)
		for {
			n, err := cd.dev.Read(buf)
			cd.mu.Lock()
			if cd.cur != nil {
				cd.cur.Write(buf[:n])
			} else {
				cd.pending = append(cd.pending, buf[:n]...)
			}
			cd.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return cd
}

// attach connects a new host; the previous one is dropped silently.
func (cd *chardev) attach(t *testing.T) net.Conn {
	hostSide, devSide := socketPairConns(t)
	cd.mu.Lock()
	if cd.cur != nil {
		cd.cur.Close()
	}
	cd.cur = devSide
	devSide.Write(cd.pending)
	cd.pending = nil
	cd.mu.Unlock()
	go io.Copy(cd.dev, devSide) // host -> guest
	return hostSide
}

func socketPairConns(t *testing.T) (net.Conn, net.Conn) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	mk := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "s")
		defer f.Close()
		c, _ := net.FileConn(f)
		return c
	}
	a, b := mk(fds[0]), mk(fds[1])
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// TestSerialResync: stale bytes in both directions and an old SSH session
// the guest never saw end must not stop a new host from connecting.
func TestSerialResync(t *testing.T) {
	ts := newTestServer(t)
	cd := newChardev(t)
	// Stale guest output, binary and longer than an SSH version line may be,
	// held for the first host; stale host input with an old nonce.
	cd.pending = append([]byte(strings.Repeat("\x00\xff", 600)), "BANGER-SYNC-OK 0000\n"...)
	go cd.dev.Write([]byte("garbage BANGER-SYNC 0000\nBANGER-GO 0000 no\n"))
	go func() { // the guest's serve loop, on a port that never closes
		for {
			if err := agentHandshake(cd.guest); err != nil {
				return
			}
			ts.srv.serveConn(noCloseConn{cd.guest})
		}
	}()

	for i := range 3 {
		host := cd.attach(t)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		c, err := agent.Dial(ctx, host, ts.signer, agent.TOFU(t.TempDir()+"/kh"))
		cancel()
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		if out, _, code := exec1(t, c, "echo hi $0", nil, nil); out != "hi /bin/sh\n" || code != 0 {
			t.Fatalf("connection %d: %q %d", i, out, code)
		}
		// Leave a session half-way (output in flight) and drop the host
		// without closing the SSH connection: the guest's server is still
		// in it when the next host arrives.
		go c.Exec(context.Background(), "yes | head -c 200000", nil, nil, io.Discard, nil)
		time.Sleep(50 * time.Millisecond)
	}
}

// noCloseConn keeps the modelled port open across SSH connections.
type noCloseConn struct{ net.Conn }

func (noCloseConn) Close() error { return nil }
