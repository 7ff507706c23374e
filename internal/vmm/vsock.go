package vmm

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// VhostVsockPath is the host device QEMU's vhost-vsock-device needs.
var VhostVsockPath = "/dev/vhost-vsock"

// VhostVsockUsable reports whether VhostVsockPath opens read-write.
func VhostVsockUsable() (bool, string) {
	f, err := os.OpenFile(VhostVsockPath, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, fmt.Sprintf("%s not usable: %v", VhostVsockPath, err)
	}
	f.Close()
	return true, VhostVsockPath + " usable"
}

// DialVsock connects to port on the guest with context id cid over AF_VSOCK
// (the kernel's vhost-vsock transport). net.FileConn does not know AF_VSOCK,
// so the socket is wrapped in an *os.File, which still gets the runtime
// poller and deadlines.
//
// Not exercised by tests on hosts without /dev/vhost-vsock.
func DialVsock(ctx context.Context, cid, port uint32) (net.Conn, error) {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("vsock socket: %w", err)
	}
	err = unix.Connect(fd, &unix.SockaddrVM{CID: cid, Port: port})
	if err == unix.EINPROGRESS {
		err = waitConnected(ctx, fd)
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("vsock connect cid %d port %d: %w", cid, port, err)
	}
	f := os.NewFile(uintptr(fd), fmt.Sprintf("vsock:%d:%d", cid, port))
	return &vsockConn{File: f, remote: vsockAddr{cid, port}}, nil
}

func waitConnected(ctx context.Context, fd int) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		n, err := unix.Poll(fds, 100)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			continue
		}
		soerr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			return err
		}
		if soerr != 0 {
			return unix.Errno(soerr)
		}
		return nil
	}
}

type vsockAddr struct{ cid, port uint32 }

func (a vsockAddr) Network() string { return "vsock" }
func (a vsockAddr) String() string  { return fmt.Sprintf("%d:%d", a.cid, a.port) }

type vsockConn struct {
	*os.File
	remote vsockAddr
}

func (c *vsockConn) LocalAddr() net.Addr  { return vsockAddr{unix.VMADDR_CID_HOST, 0} }
func (c *vsockConn) RemoteAddr() net.Addr { return c.remote }
func (c *vsockConn) SetDeadline(t time.Time) error {
	return c.File.SetDeadline(t)
}
