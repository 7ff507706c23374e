package antispoof

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"banger/internal/nat"
	"banger/internal/testenv"
)

// Every test here builds its own network namespaces and touches nothing
// else: nftables calls go through a netlink socket pinned to the "daemon"
// namespace (m.nsFd), or run on a thread that setns'd into it (nat's), and
// traffic is sent only from threads inside the guest namespaces.

const (
	bridgeIP  = "172.30.78.1"
	bridgeMAC = "02:42:ac:1e:4e:01"
	g1IP      = "172.30.78.11"
	g2IP      = "172.30.78.12"
	upIP      = "192.0.2.1" // TEST-NET-1, the "internet" side
	dUpIP     = "192.0.2.2" // the daemon namespace's uplink address
	tapPrefix = "bgr"
	upPort    = 9999
)

func sh(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// inNS runs fn on a fresh OS thread moved into the named namespace. The
// thread stays locked and is discarded when the goroutine ends, so it never
// goes back to the pool in the wrong namespace.
func inNS(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

type guest struct {
	ns, tap string
	ip      net.IP
	mac     net.HardwareAddr
}

func (g guest) port() Port { return Port{Tap: g.tap, MAC: g.mac, IP: g.ip} }

type topo struct {
	d, u   string
	dFd    int
	g1, g2 guest
}

// newTopo builds: namespace d (the daemon) with bridge br0 172.30.78.1/24;
// "VMs" g1 and g2, each a namespace whose eth0 is a veth whose other end,
// named like a banger tap (bgr…), is a port of br0; an uplink namespace u
// joined to d by a veth pair, d's default route via u, u routing the guest
// subnet back to d. IPv6 is off in the guests so the IPv6 drop counter
// counts only what a test sends.
func newTopo(t *testing.T) *topo {
	testenv.RequireRoot(t, "(network namespaces, nftables)")
	testenv.RequireTool(t, "ip")
	p := fmt.Sprintf("bgas%d", os.Getpid()%100000)
	tp := &topo{d: p + "d", u: p + "u"}
	mk := func(n int, ip string) guest {
		a := net.ParseIP(ip).To4()
		mac := net.HardwareAddr{0x02, 0x42, a[0], a[1], a[2], a[3]}
		return guest{ns: fmt.Sprintf("%sg%d", p, n), tap: fmt.Sprintf("%st%d%d", tapPrefix, os.Getpid()%10000, n), ip: a, mac: mac}
	}
	tp.g1, tp.g2 = mk(1, g1IP), mk(2, g2IP)
	for _, ns := range []string{tp.d, tp.u, tp.g1.ns, tp.g2.ns} {
		exec.Command("ip", "netns", "del", ns).Run() // leftover of a killed run
		sh(t, "ip", "netns", "add", ns)
		ns := ns
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		sh(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	sh(t, "ip", "-n", tp.d, "link", "add", "br0", "type", "bridge")
	sh(t, "ip", "-n", tp.d, "link", "set", "br0", "address", bridgeMAC)
	sh(t, "ip", "-n", tp.d, "addr", "add", bridgeIP+"/24", "dev", "br0")
	sh(t, "ip", "-n", tp.d, "link", "set", "br0", "up")
	for _, g := range []guest{tp.g1, tp.g2} {
		sh(t, "ip", "netns", "exec", g.ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
		sh(t, "ip", "-n", tp.d, "link", "add", g.tap, "type", "veth", "peer", "name", "eth0", "netns", g.ns)
		sh(t, "ip", "-n", tp.d, "link", "set", g.tap, "master", "br0", "up")
		sh(t, "ip", "-n", g.ns, "link", "set", "eth0", "address", g.mac.String())
		sh(t, "ip", "-n", g.ns, "addr", "add", g.ip.String()+"/24", "dev", "eth0")
		sh(t, "ip", "-n", g.ns, "link", "set", "eth0", "up")
		sh(t, "ip", "-n", g.ns, "route", "add", "default", "via", bridgeIP)
		// The guest always knows the gateway: a spoofing guest's own ARP
		// (which would carry the spoofed sender) cannot decide a test.
		sh(t, "ip", "-n", g.ns, "neigh", "replace", bridgeIP, "lladdr", bridgeMAC, "dev", "eth0", "nud", "permanent")
	}
	sh(t, "ip", "-n", tp.d, "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", tp.u)
	sh(t, "ip", "-n", tp.d, "addr", "add", dUpIP+"/24", "dev", "up0")
	sh(t, "ip", "-n", tp.d, "link", "set", "up0", "up")
	sh(t, "ip", "-n", tp.d, "route", "add", "default", "via", upIP)
	sh(t, "ip", "-n", tp.u, "addr", "add", upIP+"/24", "dev", "eth0")
	sh(t, "ip", "-n", tp.u, "link", "set", "eth0", "up")
	sh(t, "ip", "-n", tp.u, "route", "add", "172.30.78.0/24", "via", dUpIP)

	f, err := os.Open("/var/run/netns/" + tp.d)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	tp.dFd = int(f.Fd())
	if err := inNS(tp.d, nat.EnableIPForwarding); err != nil {
		t.Fatal(err)
	}
	return tp
}

// sink is a UDP server in the uplink namespace that remembers every
// payload it received: "reached the uplink" is a payload in it.
type sink struct {
	mu   sync.Mutex
	seen map[string]string // payload -> source address
}

func newSink(t *testing.T, ns string) *sink {
	t.Helper()
	var pc net.PacketConn
	if err := inNS(ns, func() (err error) {
		pc, err = net.ListenPacket("udp4", fmt.Sprintf("%s:%d", upIP, upPort))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	s := &sink{seen: map[string]string{}}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.seen[string(buf[:n])] = from.(*net.UDPAddr).IP.String()
			s.mu.Unlock()
		}
	}()
	return s
}

// got waits up to d for payload and returns the source it came from.
func (s *sink) got(payload string, d time.Duration) (string, bool) {
	for end := time.Now().Add(d); ; time.Sleep(20 * time.Millisecond) {
		s.mu.Lock()
		from, ok := s.seen[payload]
		s.mu.Unlock()
		if ok || time.Now().After(end) {
			return from, ok
		}
	}
}

// sendUDP sends payload to the uplink sink from inside ns, from source
// address src (which ns must have).
func sendUDP(t *testing.T, ns, src, payload string) {
	t.Helper()
	if err := inNS(ns, func() error {
		c, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.ParseIP(src)}, &net.UDPAddr{IP: net.ParseIP(upIP), Port: upPort})
		if err != nil {
			return err
		}
		defer c.Close()
		for i := 0; i < 3; i++ { // a first datagram may wait on ARP on the uplink
			if _, err := c.Write([]byte(payload)); err != nil {
				return err
			}
			time.Sleep(50 * time.Millisecond)
		}
		return nil
	}); err != nil {
		t.Fatalf("send from %s (%s): %v", ns, src, err)
	}
}

func mustReach(t *testing.T, s *sink, ns, src, payload, wantFrom string) {
	t.Helper()
	sendUDP(t, ns, src, payload)
	from, ok := s.got(payload, 3*time.Second)
	if !ok {
		t.Fatalf("%q from %s (source %s) never reached the uplink", payload, ns, src)
	}
	if from != wantFrom {
		t.Fatalf("%q from %s reached the uplink from %s, want %s", payload, ns, from, wantFrom)
	}
}

func mustNotReach(t *testing.T, s *sink, ns, src, payload string) {
	t.Helper()
	sendUDP(t, ns, src, payload)
	if from, ok := s.got(payload, time.Second); ok {
		t.Fatalf("%q from %s (source %s) reached the uplink (as %s), want it dropped", payload, ns, src, from)
	}
}

// listen starts a TCP listener in ns that accepts and closes.
func listen(t *testing.T, ns, addr string) {
	t.Helper()
	var ln net.Listener
	if err := inNS(ns, func() (err error) {
		ln, err = net.Listen("tcp4", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

func dial(ns, addr string) error {
	return inNS(ns, func() error {
		c, err := net.DialTimeout("tcp4", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
}

// sendFrame writes one raw Ethernet frame on ns's eth0 (AF_PACKET), the
// way a guest kernel that ignores its configuration would.
func sendFrame(t *testing.T, ns string, frame []byte) {
	t.Helper()
	if err := inNS(ns, func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		sa := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}
		copy(sa.Addr[:], frame[:6])
		return unix.Sendto(fd, frame, 0, sa)
	}); err != nil {
		t.Fatalf("raw send from %s: %v", ns, err)
	}
}

func mac(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }

// arpFrame is a broadcast ARP request "who has target? tell senderIP at
// senderMAC", sent from ethernet source src.
func arpFrame(src, senderMAC net.HardwareAddr, senderIP, target string) []byte {
	f := append(append([]byte{}, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), src...)
	f = append(f, 0x08, 0x06)
	f = append(f, 0, 1, 0x08, 0, 6, 4, 0, 1) // Ethernet, IPv4, request
	f = append(f, senderMAC...)
	f = append(f, net.ParseIP(senderIP).To4()...)
	f = append(f, 0, 0, 0, 0, 0, 0)
	f = append(f, net.ParseIP(target).To4()...)
	return f
}

// udpFrame is an IPv4/UDP datagram to the uplink sink, routed through the
// bridge (destination MAC: the bridge's), optionally 802.1Q-tagged.
func udpFrame(src net.HardwareAddr, srcIP, payload string, vlan bool) []byte {
	f := append(mac(bridgeMAC), src...)
	if vlan {
		f = append(f, 0x81, 0x00, 0x00, 0x05) // VLAN 5
	}
	f = append(f, 0x08, 0x00)
	ip := make([]byte, 20)
	ip[0], ip[8], ip[9] = 0x45, 64, unix.IPPROTO_UDP
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(payload)))
	copy(ip[12:], net.ParseIP(srcIP).To4())
	copy(ip[16:], net.ParseIP(upIP).To4())
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	udp := make([]byte, 8) // checksum 0: none
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], upPort)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	return append(append(append(f, ip...), udp...), payload...)
}

// ipv6Frame is a minimal IPv6 header (an all-nodes multicast, as a rogue
// router advertisement would be); its content does not matter.
func ipv6Frame(src net.HardwareAddr) []byte {
	f := append([]byte{0x33, 0x33, 0, 0, 0, 1}, src...)
	f = append(f, 0x86, 0xdd)
	hdr := make([]byte, 40)
	hdr[0], hdr[6], hdr[7] = 0x60, 59, 255 // no next header
	hdr[8], hdr[9] = 0xfe, 0x80
	hdr[24], hdr[25], hdr[39] = 0xff, 0x02, 1
	return append(f, hdr...)
}

// neighMAC is the MAC namespace ns has learned for ip on br0, or "".
func neighMAC(t *testing.T, ns, ip string) string {
	out := sh(t, "ip", "-n", ns, "neigh", "show", ip, "dev", "br0")
	if i := strings.Index(out, "lladdr "); i >= 0 {
		return strings.Fields(out[i+len("lladdr "):])[0]
	}
	return ""
}

func (tp *topo) counters(t *testing.T, m *Manager) map[string]uint64 {
	t.Helper()
	c, err := m.Counters()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// grew fails unless counter name rose from before[name].
func grew(t *testing.T, m *Manager, before map[string]uint64, name, what string) map[string]uint64 {
	t.Helper()
	var now map[string]uint64
	for end := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := m.Counters()
		if err != nil {
			t.Fatal(err)
		}
		now = c
		if now[name] > before[name] || time.Now().After(end) {
			break
		}
	}
	if now[name] <= before[name] {
		t.Fatalf("%s: counter %s stayed at %d (all: %v)", what, name, now[name], now)
	}
	return now
}

// TestSpoofing reproduces the measured hole (a guest without NAT that takes
// a NAT guest's address reaches the uplink; a guest's ARP can claim a
// peer's address), then shows the bridge table closes it while legitimate
// traffic passes, and that a port without entries passes nothing.
func TestSpoofing(t *testing.T) {
	tp := newTopo(t)
	s := newSink(t, tp.u)
	listen(t, tp.d, bridgeIP+":8081")
	listen(t, tp.g1.ns, g1IP+":8082")

	// banger's NAT table: g1 has --nat, g2 does not.
	_, subnet, _ := net.ParseCIDR("172.30.78.0/24")
	nm := nat.New("br0", subnet)
	if err := inNS(tp.d, nm.Ensure); err != nil {
		t.Fatal(err)
	}
	if err := inNS(tp.d, func() error { return nm.AddGuest(tp.g1.ip) }); err != nil {
		t.Fatal(err)
	}
	// g2 takes g1's address as well (a guest is root in its VM), only
	// while it spoofs: with it, g2 would reach g1's address locally.
	takeG1 := func(on bool) {
		op := map[bool]string{true: "add", false: "del"}[on]
		sh(t, "ip", "-n", tp.g2.ns, "addr", op, g1IP+"/32", "dev", "eth0")
	}

	// Before: the hole as measured.
	mustReach(t, s, tp.g1.ns, g1IP, "g1-legit-before", dUpIP)
	mustNotReach(t, s, tp.g2.ns, g2IP, "g2-own-before")
	takeG1(true)
	mustReach(t, s, tp.g2.ns, g1IP, "g2-as-g1-before", dUpIP)
	takeG1(false)
	sh(t, "ip", "-n", tp.d, "neigh", "flush", "dev", "br0")
	sendFrame(t, tp.g2.ns, arpFrame(tp.g2.mac, tp.g2.mac, g1IP, bridgeIP))
	time.Sleep(200 * time.Millisecond)
	if got := neighMAC(t, tp.d, g1IP); got != tp.g2.mac.String() {
		t.Fatalf("without the guard, a spoofed ARP did not poison the host (neigh %s = %q): the test proves nothing", g1IP, got)
	}

	m := New(tapPrefix)
	m.nsFd = tp.dFd
	for i := 0; i < 2; i++ { // idempotent
		if err := m.Ensure(); err != nil {
			t.Fatal(err)
		}
	}
	for _, g := range []guest{tp.g1, tp.g2} {
		if err := m.AddPort(g.port()); err != nil {
			t.Fatal(err)
		}
	}
	logTable(t, tp.d)
	sh(t, "ip", "-n", tp.d, "neigh", "flush", "dev", "br0")

	// Legitimate traffic passes: NAT out, the host, a peer.
	mustReach(t, s, tp.g1.ns, g1IP, "g1-legit", dUpIP)
	for _, c := range []struct{ ns, addr string }{
		{tp.g1.ns, bridgeIP + ":8081"}, {tp.g2.ns, bridgeIP + ":8081"}, {tp.g2.ns, g1IP + ":8082"},
	} {
		if err := dial(c.ns, c.addr); err != nil {
			t.Fatalf("%s -> %s: %v", c.ns, c.addr, err)
		}
	}

	// A port flooding DNS is cut to DNSRate in the kernel; another port's
	// queries are not affected.
	dnsFloodBounded(t, tp, m)

	// The same spoofs, now dropped at g2's port.
	before := tp.counters(t, m)
	takeG1(true)
	mustNotReach(t, s, tp.g2.ns, g1IP, "g2-as-g1")
	takeG1(false)
	before = grew(t, m, before, CounterIP, "IPv4 from g2 with g1's address")

	sh(t, "ip", "-n", tp.d, "neigh", "flush", "dev", "br0")
	sendFrame(t, tp.g2.ns, arpFrame(tp.g2.mac, tp.g2.mac, g1IP, bridgeIP))
	before = grew(t, m, before, CounterARP, "ARP from g2 claiming g1's address")
	if got := neighMAC(t, tp.d, g1IP); got == tp.g2.mac.String() {
		t.Fatalf("spoofed ARP still poisoned the host: %s is at %s", g1IP, got)
	}
	// Claiming g1's MAC too: dropped for the MAC, in ARP and in IPv4.
	sendFrame(t, tp.g2.ns, arpFrame(tp.g1.mac, tp.g1.mac, g1IP, bridgeIP))
	before = grew(t, m, before, CounterMAC, "ARP from g2 with g1's MAC and address")
	sendFrame(t, tp.g2.ns, udpFrame(tp.g1.mac, g1IP, "g2-as-g1-mac", false))
	before = grew(t, m, before, CounterMAC, "IPv4 from g2 with g1's MAC and address")
	// Own MAC, but the ARP sender MAC of g1.
	sendFrame(t, tp.g2.ns, arpFrame(tp.g2.mac, tp.g1.mac, g2IP, bridgeIP))
	before = grew(t, m, before, CounterARP, "ARP from g2 with g1's sender MAC")
	// Not Ethernet/IPv4 ARP (hlen 8): the sender fields would sit
	// elsewhere, so it is dropped whatever it carries.
	odd := arpFrame(tp.g2.mac, tp.g2.mac, g2IP, bridgeIP)
	odd[18] = 8
	sendFrame(t, tp.g2.ns, odd)
	before = grew(t, m, before, CounterARP, "ARP with hlen 8 from g2")
	// A VLAN tag around the spoofed datagram does not hide it.
	sendFrame(t, tp.g2.ns, udpFrame(tp.g2.mac, g1IP, "g2-as-g1-vlan", true))
	before = grew(t, m, before, CounterOther, "802.1Q-tagged IPv4 from g2")
	sendFrame(t, tp.g2.ns, ipv6Frame(tp.g2.mac))
	grew(t, m, before, CounterIPv6, "IPv6 from g2")
	for _, p := range []string{"g2-as-g1-mac", "g2-as-g1-vlan"} {
		if from, ok := s.got(p, 500*time.Millisecond); ok {
			t.Fatalf("%s reached the uplink (as %s)", p, from)
		}
	}
	// g1 is untouched by all that.
	mustReach(t, s, tp.g1.ns, g1IP, "g1-legit-after", dUpIP)

	// Fail closed: a port without entries passes nothing; back with them.
	if err := m.RemovePort(tp.g1.tap); err != nil {
		t.Fatal(err)
	}
	if err := dial(tp.g1.ns, bridgeIP+":8081"); err == nil {
		t.Fatal("g1 reached the host after RemovePort")
	}
	if err := m.RemovePort(tp.g1.tap); err != nil {
		t.Fatalf("second RemovePort: %v", err)
	}
	if err := m.AddPort(tp.g1.port()); err != nil {
		t.Fatal(err)
	}
	if err := dial(tp.g1.ns, bridgeIP+":8081"); err != nil {
		t.Fatalf("g1 after AddPort: %v", err)
	}
	assertPorts(t, m, tp.g1.port(), tp.g2.port())

	// AddPort replaces a tap's entries: g2 moved to another address.
	moved := tp.g2.port()
	moved.IP = net.ParseIP("172.30.78.13").To4()
	if err := m.AddPort(moved); err != nil {
		t.Fatal(err)
	}
	assertPorts(t, m, tp.g1.port(), moved)
	if err := dial(tp.g2.ns, bridgeIP+":8081"); err == nil {
		t.Fatal("g2 reached the host from its old address")
	}

	// Ensure keeps the ports and the counts.
	c1 := tp.counters(t, m)
	if err := m.Ensure(); err != nil {
		t.Fatal(err)
	}
	assertPorts(t, m, tp.g1.port(), moved)
	if c2 := tp.counters(t, m); c2[CounterIP] < c1[CounterIP] || c2[CounterARP] < c1[CounterARP] {
		t.Fatalf("Ensure reset the counters: %v then %v", c1, c2)
	}

	if err := m.Teardown(); err != nil {
		t.Fatal(err)
	}
	assertNoTable(t, tp)
	if err := m.Teardown(); err != nil {
		t.Fatalf("second Teardown: %v", err)
	}
	if err := m.AddPort(tp.g1.port()); err == nil || !strings.Contains(err.Error(), "Ensure") {
		t.Fatalf("AddPort without a table: %v", err)
	}
	if err := m.RemovePort(tp.g1.tap); err != nil {
		t.Fatalf("RemovePort without a table: %v", err)
	}
	if ps, err := m.Ports(); err != nil || len(ps) != 0 {
		t.Fatalf("Ports without a table: %v, %v", ps, err)
	}
	if c, err := m.Counters(); err != nil || len(c) != 0 {
		t.Fatalf("Counters without a table: %v, %v", c, err)
	}
	if err := inNS(tp.d, nm.Teardown); err != nil {
		t.Fatal(err)
	}
}

// dnsFloodBounded sends 2000 datagrams to port 53 of the bridge address
// from g2 as fast as it can, and a few from g1: g2's arrive only up to
// DNSBurst + DNSRate × time, g1's all arrive.
func dnsFloodBounded(t *testing.T, tp *topo, m *Manager) {
	t.Helper()
	var pc net.PacketConn
	if err := inNS(tp.d, func() (err error) {
		pc, err = net.ListenPacket("udp4", bridgeIP+":53")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if err := unix.SetsockoptInt(fdOf(t, pc), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20); err != nil {
		t.Fatal(err) // so the socket is not what drops
	}
	var mu sync.Mutex
	got := map[string]int{}
	go func() {
		buf := make([]byte, 512)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			mu.Lock()
			got[from.(*net.UDPAddr).IP.String()]++
			mu.Unlock()
		}
	}()
	before := tp.counters(t, m)
	const flood = 2000
	var elapsed time.Duration
	blast := func(ns string, n int, pause time.Duration) error {
		return inNS(ns, func() error {
			c, err := net.Dial("udp4", bridgeIP+":53")
			if err != nil {
				return err
			}
			defer c.Close()
			start := time.Now()
			for i := 0; i < n; i++ {
				c.Write([]byte("query")) // ECONNREFUSED from an earlier ICMP is fine
				time.Sleep(pause)
			}
			if n == flood {
				elapsed = time.Since(start)
			}
			return nil
		})
	}
	if err := blast(tp.g2.ns, flood, 0); err != nil {
		t.Fatal(err)
	}
	if err := blast(tp.g1.ns, 5, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	g1n, g2n := got[g1IP], got[g2IP]
	mu.Unlock()
	limit := DNSBurst + int(DNSRate*(elapsed.Seconds()+0.3)) + 10
	t.Logf("DNS flood: g2 sent %d in %v, %d arrived (limit %d); g1 sent 5, %d arrived", flood, elapsed, g2n, limit, g1n)
	if g2n == 0 || g2n > limit {
		t.Fatalf("flooding port: %d of %d datagrams arrived, want 1..%d", g2n, flood, limit)
	}
	if g1n != 5 {
		t.Fatalf("the other port: %d of 5 datagrams arrived", g1n)
	}
	grew(t, m, before, CounterDNS, "DNS flood from g2")
}

func fdOf(t *testing.T, pc net.PacketConn) int {
	t.Helper()
	rc, err := pc.(*net.UDPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd int
	rc.Control(func(f uintptr) { fd = int(f) })
	return fd
}

// TestOtherPortsUntouched: a bridge port not named like a tap is not
// guarded.
func TestOtherPortsUntouched(t *testing.T) {
	tp := newTopo(t)
	m := New("bgz") // neither guest's port matches this prefix
	m.nsFd = tp.dFd
	if err := m.Ensure(); err != nil {
		t.Fatal(err)
	}
	defer m.Teardown()
	listen(t, tp.d, bridgeIP+":8081")
	for _, g := range []guest{tp.g1, tp.g2} {
		if err := dial(g.ns, bridgeIP+":8081"); err != nil {
			t.Fatalf("unguarded port %s: %v", g.tap, err)
		}
	}
	if c := tp.counters(t, m); c[CounterMAC] != 0 || c[CounterIP] != 0 {
		t.Fatalf("counted drops on unguarded ports: %v", c)
	}
}

func assertPorts(t *testing.T, m *Manager, want ...Port) {
	t.Helper()
	got, err := m.Ports()
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Ports = %v, want %v", got, want)
	}
	// The MAC set holds exactly one entry per port too.
	c, err := m.conn()
	if err != nil {
		t.Fatal(err)
	}
	macs, err := c.GetSetElements(macSet(m.table()))
	if err != nil || len(macs) != len(want) {
		t.Fatalf("%s has %d elements (%v), want %d", MACSetName, len(macs), err, len(want))
	}
}

func assertNoTable(t *testing.T, tp *topo) {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(tp.dFd))
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyBridge)
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		if tb.Name == TableName {
			t.Fatalf("table bridge %s still there after Teardown", tb.Name)
		}
	}
}

func logTable(t *testing.T, ns string) {
	if _, err := exec.LookPath("nft"); err != nil {
		return
	}
	out, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "table", "bridge", TableName).CombinedOutput()
	if err != nil {
		t.Fatalf("nft list table: %v: %s", err, out)
	}
	t.Logf("nft list table bridge %s:\n%s", TableName, out)
}

func TestKeys(t *testing.T) {
	p := Port{Tap: "bgr0123456789ab", MAC: mac("02:42:ac:1e:00:05"), IP: net.ParseIP("172.30.0.5")}
	mk, ak, err := keys(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(mk) != int(macKeyType.Bytes) || len(ak) != int(addrKeyType.Bytes) {
		t.Fatalf("key lengths %d, %d; want %d, %d", len(mk), len(ak), macKeyType.Bytes, addrKeyType.Bytes)
	}
	back, ok := parseAddrKey(ak)
	if !ok || back.String() != p.String() {
		t.Fatalf("parseAddrKey = %v, %v; want %v", back, ok, p)
	}
	for _, bad := range []Port{
		{Tap: "", MAC: p.MAC, IP: p.IP},
		{Tap: "averyveryverylongname", MAC: p.MAC, IP: p.IP},
		{Tap: p.Tap, MAC: nil, IP: p.IP},
		{Tap: p.Tap, MAC: mac("01:00:5e:00:00:01"), IP: p.IP},
		{Tap: p.Tap, MAC: p.MAC, IP: net.ParseIP("2001:db8::1")},
		{Tap: p.Tap, MAC: p.MAC, IP: net.IPv4zero},
		{Tap: p.Tap, MAC: p.MAC},
	} {
		if _, _, err := keys(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	other := Port{Tap: "bgrother", MAC: p.MAC, IP: p.IP}
	_, ok2, _ := keys(other)
	elems := []nftables.SetElement{{Key: ak}, {Key: ok2}}
	if s := stale(elems, p.Tap, ak); len(s) != 0 {
		t.Fatalf("stale kept-key: %v", s)
	}
	if s := stale(elems, p.Tap, nil); len(s) != 1 {
		t.Fatalf("stale of %s: %v", p.Tap, s)
	}
	if err := New("").Ensure(); err == nil {
		t.Fatal("empty tap prefix accepted")
	}
}
