package daemon

import (
	"context"
	"errors"
	"net"
	"net/netip"

	"banger/api"

	"golang.org/x/sys/unix"

	"banger/internal/model"
)

// caller is who is on the other end of an RPC connection, as the kernel
// says (SO_PEERCRED), never as the request claims. Root is trusted; any
// other uid (a member of the banger group, who can open the socket) is a
// user: it sees and acts on its own VMs only.
type caller struct {
	UID, GID uint32
	PID      int32
	// known is false for calls that came through no connection (the
	// daemon's own work, in-process tests): those act as root.
	known bool
}

func (c caller) root() bool { return !c.known || c.UID == 0 }

type callerKey struct{}

func withCaller(ctx context.Context, c caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// callerOf returns the caller of the request ctx belongs to.
func callerOf(ctx context.Context) caller {
	c, _ := ctx.Value(callerKey{}).(caller)
	return c
}

// peerCred reads the credentials of the process that connected conn.
func peerCred(conn net.Conn) (caller, error) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return caller{}, errors.New("not a unix socket connection")
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return caller{}, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return caller{}, err
	}
	if cerr != nil {
		return caller{}, cerr
	}
	return caller{UID: cred.Uid, GID: cred.Gid, PID: cred.Pid, known: true}, nil
}

// owns reports whether the caller of ctx may see and act on rec: root on
// every VM, a user on the VMs it created.
func owns(ctx context.Context, rec model.VMRecord) bool {
	c := callerOf(ctx)
	return c.root() || rec.Spec.OwnerUID == int(c.UID)
}

// maxPortsPerVM bounds the forwards (and so the host listeners) of a VM.
const maxPortsPerVM = 32

// checkPortsFor refuses forwards the caller may not open: a user may
// forward host ports from 1024 up on loopback only; other addresses and
// privileged ports are root's.
func checkPortsFor(ctx context.Context, ports []model.PortForward) error {
	if len(ports) > maxPortsPerVM {
		return api.Errorf(api.KindInvalidArgument, "%d port forwards: at most %d per VM", len(ports), maxPortsPerVM)
	}
	if callerOf(ctx).root() {
		return nil
	}
	for _, p := range ports {
		ip, err := netip.ParseAddr(p.HostIP)
		if err != nil || !ip.IsLoopback() {
			return api.Errorf(api.KindPermissionDenied, "-p %s:%d:%d: only root may forward from %s; use a loopback address such as 127.0.0.1:%d:%d",
				p.HostIP, p.HostPort, p.GuestPort, p.HostIP, p.HostPort, p.GuestPort)
		}
		if p.HostPort < 1024 {
			return api.Errorf(api.KindPermissionDenied, "-p %s:%d:%d: host ports below 1024 are root's; pick one from 1024 up", p.HostIP, p.HostPort, p.GuestPort)
		}
	}
	return nil
}

// rootOnly refuses a host-wide operation to a caller that is not root.
func rootOnly(ctx context.Context, what string) error {
	if callerOf(ctx).root() {
		return nil
	}
	return api.Errorf(api.KindPermissionDenied, "%s changes the host or what every user shares: run it as root (sudo banger ...)", what)
}

// ownsUID is owns for anything else a user owns (a snapshot).
func ownsUID(ctx context.Context, uid int) bool {
	c := callerOf(ctx)
	return c.root() || uid == int(c.UID)
}

// asRoot is ctx with no caller: the daemon's own look-ups across owners
// (a name is unique across owners).
func asRoot(ctx context.Context) context.Context { return withCaller(ctx, caller{}) }
