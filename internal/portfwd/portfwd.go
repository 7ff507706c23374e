// Package portfwd forwards host TCP ports to guest ports with a userspace
// proxy in the daemon (`vm create -p [HOSTIP:]HOSTPORT:GUESTPORT[/tcp]`).
//
// A userspace proxy rather than DNAT rules: it works for 127.0.0.1 (DNAT
// to a guest from loopback needs route_localnet), needs no firewall
// changes on the host, and a taken port is found by bind(2) itself.
//
// Lifecycle, per VM (the owner): Reserve binds every listener before the
// VM boots, so a taken port fails the create/start with nothing booted and
// nothing half-reserved; Activate starts proxying once the guest is up
// (clients that connect in between wait in the listen backlog); Release
// closes the listeners and every live connection. Listeners are not held
// while a VM is stopped: stop calls Release and start calls Reserve again,
// so a stopped VM's ports are free for others and start may fail if one
// was taken meanwhile.
package portfwd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultHostIP is where a forward listens when the spec names no address:
// loopback, so a forward never exposes a guest to the network by accident.
const DefaultHostIP = "127.0.0.1"

// DefaultDialTimeout bounds the connection to the guest for each client.
const DefaultDialTimeout = 5 * time.Second

// Forward is one host port forwarded to one guest port.
type Forward struct {
	HostIP    string `json:"host_ip"`
	HostPort  int    `json:"host_port"`
	GuestIP   string `json:"guest_ip,omitempty"`
	GuestPort int    `json:"guest_port"`
	Proto     string `json:"proto"`
}

// HostAddr is "HOSTIP:HOSTPORT" (IPv6 bracketed).
func (f Forward) HostAddr() string {
	return net.JoinHostPort(f.HostIP, strconv.Itoa(f.HostPort))
}

// GuestAddr is "GUESTIP:GUESTPORT".
func (f Forward) GuestAddr() string {
	return net.JoinHostPort(f.GuestIP, strconv.Itoa(f.GuestPort))
}

// String is the form `vm ls` shows: "127.0.0.1:8080->80/tcp".
func (f Forward) String() string {
	return fmt.Sprintf("%s->%d/%s", f.HostAddr(), f.GuestPort, f.proto())
}

// Spec is the canonical -p form, which ParseSpec reads back.
func (f Forward) Spec() string {
	return fmt.Sprintf("%s:%d/%s", f.HostAddr(), f.GuestPort, f.proto())
}

func (f Forward) proto() string {
	if f.Proto == "" {
		return "tcp"
	}
	return f.Proto
}

// ParseSpec reads a -p value: [HOSTIP:]HOSTPORT:GUESTPORT[/tcp], with an
// IPv6 HOSTIP in brackets ("[::1]:8080:80"). The host address defaults to
// 127.0.0.1; GuestIP is left empty for the daemon to fill in.
func ParseSpec(s string) (Forward, error) {
	bad := func(why string) (Forward, error) {
		return Forward{}, fmt.Errorf("port forward %q: %s (want [HOSTIP:]HOSTPORT:GUESTPORT[/tcp], e.g. 8080:80 or 0.0.0.0:8080:80/tcp)", s, why)
	}
	f := Forward{HostIP: DefaultHostIP, Proto: "tcp"}
	rest := s
	if i := strings.LastIndex(rest, "/"); i >= 0 {
		switch proto := strings.ToLower(rest[i+1:]); proto {
		case "tcp":
		case "udp", "sctp":
			return Forward{}, fmt.Errorf("port forward %q: %s is not supported yet, only tcp", s, proto)
		default:
			return bad(fmt.Sprintf("unknown protocol %q", rest[i+1:]))
		}
		rest = rest[:i]
	}
	var ports []string
	if strings.HasPrefix(rest, "[") {
		end := strings.Index(rest, "]")
		if end < 0 || !strings.HasPrefix(rest[end+1:], ":") {
			return bad("unterminated [IPv6] host address")
		}
		f.HostIP = rest[1:end]
		ports = strings.Split(rest[end+2:], ":")
		if len(ports) != 2 {
			return bad("need HOSTPORT:GUESTPORT after the host address")
		}
	} else {
		parts := strings.Split(rest, ":")
		switch len(parts) {
		case 2:
			ports = parts
		case 3:
			f.HostIP, ports = parts[0], parts[1:]
		default:
			return bad("wrong number of fields (write an IPv6 host address in brackets)")
		}
	}
	ip := net.ParseIP(f.HostIP)
	if ip == nil {
		return bad(fmt.Sprintf("host address %q is not an IP address", f.HostIP))
	}
	f.HostIP = ip.String()
	var err error
	if f.HostPort, err = parsePort(ports[0]); err != nil {
		return bad("host " + err.Error())
	}
	if f.GuestPort, err = parsePort(ports[1]); err != nil {
		return bad("guest " + err.Error())
	}
	return f, nil
}

func parsePort(s string) (int, error) {
	p, err := strconv.Atoi(s)
	if err != nil || p < 1 || p > 65535 {
		return 0, fmt.Errorf("port %q is not a number from 1 to 65535", s)
	}
	return p, nil
}

// validate checks a Forward as Reserve receives it: any RPC caller lands
// here without going through ParseSpec.
func (f Forward) validate() (Forward, error) {
	if f.Proto == "" {
		f.Proto = "tcp"
	}
	if f.Proto != "tcp" {
		return f, fmt.Errorf("port forward %s: protocol %q is not supported, only tcp", f.Spec(), f.Proto)
	}
	hip := net.ParseIP(f.HostIP)
	if hip == nil {
		return f, fmt.Errorf("port forward: host address %q is not an IP address", f.HostIP)
	}
	gip := net.ParseIP(f.GuestIP)
	if gip == nil {
		return f, fmt.Errorf("port forward %s: guest address %q is not an IP address", f.Spec(), f.GuestIP)
	}
	f.HostIP, f.GuestIP = hip.String(), gip.String()
	if f.HostPort < 1 || f.HostPort > 65535 || f.GuestPort < 1 || f.GuestPort > 65535 {
		return f, fmt.Errorf("port forward %s: ports must be 1 to 65535", f.Spec())
	}
	return f, nil
}

// overlaps reports whether two forwards would listen on the same socket:
// same port, and same address or either one the wildcard.
func overlaps(a, b Forward) bool {
	if a.HostPort != b.HostPort {
		return false
	}
	ai, bi := net.ParseIP(a.HostIP), net.ParseIP(b.HostIP)
	return ai.Equal(bi) || ai.IsUnspecified() || bi.IsUnspecified()
}

// Manager holds every VM's forwards. The zero value is not usable; use
// NewManager.
type Manager struct {
	// DialTimeout bounds each connection to a guest; set before use.
	DialTimeout time.Duration

	// mu guards owners. Reserve holds it across its conflict check and
	// its binds so two VMs asking for one port cannot both pass the check.
	mu     sync.Mutex
	owners map[string]*group
}

// NewManager returns an empty Manager.
func NewManager() *Manager {
	return &Manager{DialTimeout: DefaultDialTimeout, owners: map[string]*group{}}
}

// group is one owner's listeners and live connections.
type group struct {
	fwds   []Forward
	lns    []net.Listener
	ctx    context.Context // cancelled by Release: aborts guest dials
	cancel context.CancelFunc
	wg     sync.WaitGroup // accept loops and connection handlers

	// mu guards conns, active, closed and last. track refuses new
	// connections once closed is set, so Release never misses one
	// accepted late.
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	active bool
	closed bool
	last   time.Time // a connection last opened or closed (idle-stop)
}

// Reserve validates fs and binds a listener for each, all or nothing: if
// any port is taken, the ones already bound are closed and the error names
// the host address and, when another VM holds it, that VM. Proxying starts
// with Activate.
func (m *Manager) Reserve(owner string, fs []Forward) error {
	clean := make([]Forward, 0, len(fs))
	for i, f := range fs {
		f, err := f.validate()
		if err != nil {
			return err
		}
		for _, prev := range clean {
			if overlaps(prev, f) {
				return fmt.Errorf("port forwards %s and %s use the same host port %s", prev.Spec(), fs[i].Spec(), f.HostAddr())
			}
		}
		clean = append(clean, f)
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.owners[owner]; ok {
		return fmt.Errorf("port forwards for %q are already reserved (release them first)", owner)
	}
	for other, g := range m.owners {
		for _, theirs := range g.fwds {
			for _, f := range clean {
				if overlaps(theirs, f) {
					return fmt.Errorf("host port %s is already forwarded to VM %q (%s); pick another host port", f.HostAddr(), other, theirs)
				}
			}
		}
	}
	var lns []net.Listener
	for _, f := range clean {
		ln, err := net.Listen("tcp", f.HostAddr())
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return bindError(f, err)
		}
		lns = append(lns, ln)
	}
	if len(lns) == 0 {
		return nil // nothing to hold: no entry, so List stays clean
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.owners[owner] = &group{fwds: clean, lns: lns, ctx: ctx, cancel: cancel, conns: map[net.Conn]struct{}{}}
	return nil
}

func bindError(f Forward, err error) error {
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return fmt.Errorf("host port %s is already in use by another process; pick another host port for -p %s", f.HostAddr(), f.Spec())
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return fmt.Errorf("host address %s is not an address of this host; use one it has (or 0.0.0.0) for -p %s", f.HostIP, f.Spec())
	case errors.Is(err, syscall.EACCES):
		return fmt.Errorf("host port %s needs privileges to bind: %v", f.HostAddr(), err)
	}
	return fmt.Errorf("listen on host port %s: %w", f.HostAddr(), err)
}

// Activate starts proxying the owner's reserved forwards. Activating twice,
// or an owner with nothing reserved (a VM without -p), is a no-op; an
// owner released meanwhile is an error.
func (m *Manager) Activate(owner string) error {
	m.mu.Lock()
	g, ok := m.owners[owner]
	m.mu.Unlock()
	if !ok {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return fmt.Errorf("port forwards for %q were released", owner)
	}
	if g.active {
		return nil
	}
	g.active = true
	for i, ln := range g.lns {
		g.wg.Add(1)
		go g.acceptLoop(ln, g.fwds[i], m.dialTimeout())
	}
	return nil
}

func (m *Manager) dialTimeout() time.Duration {
	if m.DialTimeout > 0 {
		return m.DialTimeout
	}
	return DefaultDialTimeout
}

// Release closes the owner's listeners and live connections and waits for
// its goroutines. Unknown owners are ignored.
func (m *Manager) Release(owner string) {
	m.mu.Lock()
	g, ok := m.owners[owner]
	delete(m.owners, owner)
	m.mu.Unlock()
	if !ok {
		return
	}
	g.mu.Lock()
	g.closed = true
	conns := g.conns
	g.conns = nil
	g.mu.Unlock()
	g.cancel()
	for _, ln := range g.lns {
		ln.Close()
	}
	for c := range conns {
		c.Close()
	}
	g.wg.Wait()
}

// List returns a copy of every owner's forwards, each sorted by host port.
func (m *Manager) List() map[string][]Forward {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string][]Forward, len(m.owners))
	for o, g := range m.owners {
		fs := append([]Forward(nil), g.fwds...)
		sort.Slice(fs, func(i, j int) bool { return fs[i].HostPort < fs[j].HostPort })
		out[o] = fs
	}
	return out
}

// track registers c for Release; false means the group is closing and c
// has been closed.
func (g *group) track(c net.Conn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		c.Close()
		return false
	}
	g.conns[c] = struct{}{}
	g.last = time.Now()
	return true
}

func (g *group) untrack(cs ...net.Conn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, c := range cs {
		delete(g.conns, c)
		c.Close()
	}
	g.last = time.Now()
}

// Activity reports the owner's open connections (client and guest sides
// both count) and when one last opened or closed; zero for an owner with
// no forwards. The daemon's idle-stop treats either as traffic.
func (m *Manager) Activity(owner string) (open int, last time.Time) {
	m.mu.Lock()
	g, ok := m.owners[owner]
	m.mu.Unlock()
	if !ok {
		return 0, time.Time{}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.conns), g.last
}

func (g *group) acceptLoop(ln net.Listener, f Forward, timeout time.Duration) {
	defer g.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || g.ctx.Err() != nil {
				return
			}
			// EMFILE and friends: back off instead of spinning, until
			// Release.
			select {
			case <-g.ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		if !g.track(c) {
			return
		}
		g.wg.Add(1)
		go g.proxy(c, f, timeout)
	}
}

// proxy connects c to the guest and copies both ways. Each direction's
// EOF is passed on as a half-close, so request/response protocols that
// shut down their write side keep working.
func (g *group) proxy(c net.Conn, f Forward, timeout time.Duration) {
	defer g.wg.Done()
	ctx, cancel := context.WithTimeout(g.ctx, timeout)
	up, err := (&net.Dialer{}).DialContext(ctx, "tcp", f.GuestAddr())
	cancel()
	if err != nil {
		g.untrack(c) // the client sees the connection close
		return
	}
	if !g.track(up) {
		g.untrack(c)
		return
	}
	done := make(chan struct{}, 2)
	go func() { halfCopy(up, c); done <- struct{}{} }()
	go func() { halfCopy(c, up); done <- struct{}{} }()
	<-done
	<-done
	g.untrack(c, up)
}

func halfCopy(dst, src net.Conn) {
	io.Copy(dst, src)
	if tc, ok := dst.(*net.TCPConn); ok {
		tc.CloseWrite()
	} else {
		dst.Close()
	}
}
