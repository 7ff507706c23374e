package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"banger/internal/guestproto"
)

// loadOrCreateHostKey reads the guest's SSH host key, creating it on first
// boot. It lives in the overlay (system.cow), so the key, and the host's
// recorded trust in it, survive reboots.
func loadOrCreateHostKey(path string) (ssh.Signer, error) {
	if b, err := os.ReadFile(path); err == nil {
		s, err := ssh.ParsePrivateKey(b)
		if err != nil {
			return nil, fmt.Errorf("host key %s is corrupt (%v): delete it to generate a new one", path, err)
		}
		return s, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read host key: %w", err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	blk, err := ssh.MarshalPrivateKey(priv, "banger-init host key")
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(path, pem.EncodeToMemory(blk), 0o600); err != nil {
		return nil, fmt.Errorf("save host key: %w", err)
	}
	// Commit it to system.cow now: a VM killed seconds after its first
	// boot (before ext4's periodic commit) would otherwise come back with a
	// new host key that no longer matches the host's known_hosts.
	unix.Sync()
	return ssh.NewSignerFromKey(priv)
}

func serveTCP(srv *sshServer) {
	l, err := net.Listen("tcp", fmt.Sprintf(":%d", guestproto.SSHPort))
	if err != nil {
		logf("ssh on tcp: %v", err)
		return
	}
	for {
		c, err := l.Accept()
		if err != nil {
			logf("ssh on tcp: %v", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		go srv.serveConn(c)
	}
}

// serveAgent starts the agent channel the host asked for and returns once
// it is listening (the "ready" point).
func serveAgent(srv *sshServer, kind string) error {
	switch kind {
	case "":
		return nil
	case guestproto.AgentVsock:
		l, err := listenVsock(guestproto.AgentVsockPort)
		if err != nil {
			return fmt.Errorf("agent on vsock port %d (are the vsock modules in the initramfs?): %w", guestproto.AgentVsockPort, err)
		}
		go func() {
			for {
				c, err := l.accept()
				if err != nil {
					logf("agent vsock accept: %v", err)
					time.Sleep(100 * time.Millisecond)
					continue
				}
				go func() {
					if err := agentHandshake(c); err != nil {
						c.Close()
						return
					}
					srv.serveConn(c)
				}()
			}
		}()
		return nil
	case guestproto.AgentSerial:
		dev, err := findVirtioPort("/sys/class/virtio-ports", guestproto.AgentSerialName, 5*time.Second)
		if err != nil {
			return err
		}
		go serveSerial(srv, dev)
		return nil
	}
	return fmt.Errorf("unknown agent transport %q", kind)
}

// findVirtioPort returns /dev/vportNpM for the virtio-serial port named
// name. There is no udev, so no /dev/virtio-ports/ link: read sysfs.
func findVirtioPort(sysDir, name string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		ents, _ := os.ReadDir(sysDir)
		var seen []string
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(sysDir, e.Name(), "name"))
			if err != nil {
				continue
			}
			n := strings.TrimSpace(string(b))
			if n == name {
				return "/dev/" + e.Name(), nil
			}
			seen = append(seen, e.Name()+"="+n)
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no virtio-serial port named %q (found %v): is virtio_console in the initramfs module list and the port on the VMM command line?", name, seen)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// serveSerial serves one SSH connection at a time over the port, forever.
// Each starts with the resynchronization of guestproto.AgentSync, so that
// bytes left in flight by an earlier host connection are discarded.
func serveSerial(srv *sshServer, dev string) {
	for {
		// A blocking fd outside Go's poller: with no host connected the
		// port reports EPOLLHUP and would make a poller spin.
		fd, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
		if err != nil {
			logf("agent port %s: %v", dev, err)
			time.Sleep(200 * time.Millisecond)
			continue
		}
		f := os.NewFile(uintptr(fd), dev)
		t0 := time.Now()
		if err := agentHandshake(f); err != nil {
			f.Close()
		} else if err := srv.serveConn(fileConn{f}); err != nil {
			logf("agent: %v", err)
		}
		// Never spin if the port keeps failing at once.
		if time.Since(t0) < 100*time.Millisecond {
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// agentHandshake is the guest half of the agent resynchronization: answer
// the newest host's sync line, then wait for its GO. Everything else read
// is stale and dropped. It reads a byte at a time so that not one byte of
// the SSH stream after GO is consumed here.
func agentHandshake(rw io.ReadWriter) error {
	// With no host attached the port's reads return EOF at once, but writes
	// block until a host attaches: this newline (discarded by the host) is
	// how we wait without spinning.
	if _, err := rw.Write([]byte("\n")); err != nil {
		return err
	}
	const maxLine = 128
	var (
		line     []byte
		overflow bool
		nonce    string
		b        [1]byte
	)
	for {
		if _, err := rw.Read(b[:]); err != nil {
			return err
		}
		if b[0] != '\n' {
			if len(line) < maxLine {
				line = append(line, b[0])
			} else {
				overflow = true
			}
			continue
		}
		s := string(line)
		ok := !overflow
		line, overflow = line[:0], false
		switch {
		case !ok:
		case strings.HasPrefix(s, guestproto.AgentSync):
			if n := strings.TrimPrefix(s, guestproto.AgentSync); n != "" && n != nonce {
				nonce = n
				if _, err := rw.Write([]byte(guestproto.AgentSyncOK + nonce + "\n")); err != nil {
					return err
				}
			}
		case nonce != "" && s == guestproto.AgentGo+nonce:
			return nil
		}
	}
}

// fileConn adapts a character device or socket fd to net.Conn for the SSH
// server.
type fileConn struct{ *os.File }

type fileAddr string

func (a fileAddr) Network() string { return "file" }
func (a fileAddr) String() string  { return string(a) }

func (c fileConn) LocalAddr() net.Addr  { return fileAddr(c.Name()) }
func (c fileConn) RemoteAddr() net.Addr { return fileAddr("host:" + c.Name()) }

type vsockListener struct{ fd int }

func listenVsock(port uint32) (*vsockListener, error) {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_ANY, Port: port}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := unix.Listen(fd, 64); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &vsockListener{fd: fd}, nil
}

func (l *vsockListener) accept() (net.Conn, error) {
	for {
		nfd, _, err := unix.Accept4(l.fd, unix.SOCK_CLOEXEC)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		// Non-blocking: os.NewFile then registers it with Go's poller.
		unix.SetNonblock(nfd, true)
		return fileConn{os.NewFile(uintptr(nfd), "vsock")}, nil
	}
}
