package daemon

import (
	"context"
	"errors"
	"net"

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

// ownsUID is owns for anything else a user owns (a snapshot).
func ownsUID(ctx context.Context, uid int) bool {
	c := callerOf(ctx)
	return c.root() || uid == int(c.UID)
}

// asRoot is ctx with no caller: the daemon's own look-ups across owners
// (a name is unique across owners).
func asRoot(ctx context.Context) context.Context { return withCaller(ctx, caller{}) }
