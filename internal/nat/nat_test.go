package nat

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"banger/internal/testenv"
)

// Every test here builds its own network namespaces and touches nothing
// else: nftables calls go through a netlink socket pinned to the daemon
// namespace (m.nsFd) and are also made from a thread that setns'd into it.

const (
	bridgeIP = "172.30.77.1"
	g1IP     = "172.30.77.11"
	g2IP     = "172.30.77.12"
	upIP     = "192.0.2.1" // TEST-NET-1, the "internet" side
	dUpIP    = "192.0.2.2" // the daemon namespace's uplink address
)

func need(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t, "(network namespaces, nftables)")
	testenv.RequireTool(t, "ip")
}

func sh(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
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

type topo struct {
	d, g1, g2, u string
	dFd          int
}

// newTopo builds: namespace d (the daemon) with bridge br0 172.30.77.1/24;
// guests g1 and g2 on veth pairs enslaved to br0 (standing in for taps),
// default route via the bridge; uplink u joined to d by a veth pair
// (192.0.2.2 in d, 192.0.2.1 in u), d's default route via u. u routes the
// guest subnet back to d, so an un-NATed guest would get replies: when g2
// cannot fetch, it is the forward drop that stops it.
func newTopo(t *testing.T) *topo {
	p := fmt.Sprintf("bgnat%d", os.Getpid()%100000)
	tp := &topo{d: p + "d", g1: p + "g1", g2: p + "g2", u: p + "u"}
	for _, ns := range []string{tp.d, tp.g1, tp.g2, tp.u} {
		exec.Command("ip", "netns", "del", ns).Run() // leftover of a killed run
		sh(t, "ip", "netns", "add", ns)
		ns := ns
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		sh(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	sh(t, "ip", "-n", tp.d, "link", "add", "br0", "type", "bridge")
	sh(t, "ip", "-n", tp.d, "addr", "add", bridgeIP+"/24", "dev", "br0")
	sh(t, "ip", "-n", tp.d, "link", "set", "br0", "up")
	for _, g := range []struct{ ns, veth, ip string }{{tp.g1, "vg1", g1IP}, {tp.g2, "vg2", g2IP}} {
		sh(t, "ip", "-n", tp.d, "link", "add", g.veth, "type", "veth", "peer", "name", "eth0", "netns", g.ns)
		sh(t, "ip", "-n", tp.d, "link", "set", g.veth, "master", "br0", "up")
		sh(t, "ip", "-n", g.ns, "addr", "add", g.ip+"/24", "dev", "eth0")
		sh(t, "ip", "-n", g.ns, "link", "set", "eth0", "up")
		sh(t, "ip", "-n", g.ns, "route", "add", "default", "via", bridgeIP)
	}
	sh(t, "ip", "-n", tp.d, "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", tp.u)
	sh(t, "ip", "-n", tp.d, "addr", "add", dUpIP+"/24", "dev", "up0")
	sh(t, "ip", "-n", tp.d, "link", "set", "up0", "up")
	sh(t, "ip", "-n", tp.d, "route", "add", "default", "via", upIP)
	sh(t, "ip", "-n", tp.u, "addr", "add", upIP+"/24", "dev", "eth0")
	sh(t, "ip", "-n", tp.u, "link", "set", "eth0", "up")
	sh(t, "ip", "-n", tp.u, "route", "add", "172.30.77.0/24", "via", dUpIP)

	f, err := os.Open("/var/run/netns/" + tp.d)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	tp.dFd = int(f.Fd())
	if err := inNS(tp.d, EnableIPForwarding); err != nil {
		t.Fatal(err)
	}
	return tp
}

// serveHTTP starts an HTTP server whose socket lives in ns; it answers
// with the client address it sees, so tests can tell NAT from routing.
func serveHTTP(t *testing.T, ns, addr string) {
	t.Helper()
	var ln net.Listener
	if err := inNS(ns, func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		io.WriteString(w, host)
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// fetch GETs http://addr/ from inside ns; the socket is created on a
// thread in ns. It returns the client address the server saw.
func fetch(ns, addr string) (string, error) {
	var body string
	err := inNS(ns, func() error {
		conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
		req.Close = true
		if err := req.Write(conn); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		body = string(b)
		return err
	})
	return body, err
}

func mustFetch(t *testing.T, ns, addr, wantClient string) {
	t.Helper()
	got, err := fetch(ns, addr)
	if err != nil {
		t.Fatalf("fetch %s from %s: %v", addr, ns, err)
	}
	if got != wantClient {
		t.Fatalf("fetch %s from %s: server saw client %s, want %s", addr, ns, got, wantClient)
	}
}

func mustNotFetch(t *testing.T, ns, addr string) {
	t.Helper()
	if got, err := fetch(ns, addr); err == nil {
		t.Fatalf("fetch %s from %s succeeded (server saw %s), want it blocked", addr, ns, got)
	}
}

func TestNAT(t *testing.T) {
	need(t)
	tp := newTopo(t)
	upURL := upIP + ":8080"
	serveHTTP(t, tp.u, upURL)
	serveHTTP(t, tp.d, bridgeIP+":8081") // "the host"
	serveHTTP(t, tp.g1, g1IP+":8082")    // a peer guest
	_, subnet, _ := net.ParseCIDR("172.30.77.0/24")
	m := New("br0", subnet)
	m.nsFd = tp.dFd

	// Without banger's table the topology routes everyone, un-NATed.
	mustFetch(t, tp.g2, upURL, g2IP)

	for i := 0; i < 2; i++ { // idempotent
		if err := inNS(tp.d, m.Ensure); err != nil {
			t.Fatal(err)
		}
	}
	assertRuleCounts(t, m, 5, 1)

	// Nobody has NAT yet: nobody leaves, but the host and peers are reachable.
	mustNotFetch(t, tp.g1, upURL)
	mustNotFetch(t, tp.g2, upURL)
	mustFetch(t, tp.g2, bridgeIP+":8081", g2IP)
	mustFetch(t, tp.g2, g1IP+":8082", g2IP)

	g1 := net.ParseIP(g1IP)
	for i := 0; i < 2; i++ { // adding twice is fine
		if err := inNS(tp.d, func() error { return m.AddGuest(g1) }); err != nil {
			t.Fatal(err)
		}
	}
	mustFetch(t, tp.g1, upURL, dUpIP) // masqueraded behind the uplink address
	mustNotFetch(t, tp.g2, upURL)
	assertGuests(t, tp, m, g1IP)

	// Ensure rewrites the rules but keeps the set's elements.
	if err := inNS(tp.d, m.Ensure); err != nil {
		t.Fatal(err)
	}
	assertRuleCounts(t, m, 5, 1)
	assertGuests(t, tp, m, g1IP)
	mustFetch(t, tp.g1, upURL, dUpIP)
	logRuleset(t, tp.d)

	if err := inNS(tp.d, func() error { return m.RemoveGuest(g1) }); err != nil {
		t.Fatal(err)
	}
	mustNotFetch(t, tp.g1, upURL)
	assertGuests(t, tp, m)
	if err := inNS(tp.d, func() error { return m.RemoveGuest(g1) }); err != nil {
		t.Fatalf("removing a missing guest: %v", err)
	}

	if err := inNS(tp.d, m.Teardown); err != nil {
		t.Fatal(err)
	}
	assertNoTable(t, tp)
	if err := inNS(tp.d, m.Teardown); err != nil {
		t.Fatalf("second Teardown: %v", err)
	}
	if err := inNS(tp.d, func() error { return m.AddGuest(g1) }); err == nil || !strings.Contains(err.Error(), "Ensure") {
		t.Fatalf("AddGuest without a table: %v", err)
	}
	if err := inNS(tp.d, func() error { return m.RemoveGuest(g1) }); err != nil {
		t.Fatalf("RemoveGuest without a table: %v", err)
	}
	if ips, err := m.Guests(); err != nil || len(ips) != 0 {
		t.Fatalf("Guests without a table: %v, %v", ips, err)
	}
	// With the table gone the host's (empty) rules apply again.
	mustFetch(t, tp.g2, upURL, g2IP)
}

func TestGuestValidation(t *testing.T) {
	_, subnet, _ := net.ParseCIDR("172.30.77.0/24")
	m := New("br0", subnet)
	for _, ip := range []net.IP{nil, net.ParseIP("2001:db8::1"), net.ParseIP("10.0.0.1")} {
		if _, err := m.guestKey(ip); err == nil {
			t.Fatalf("%v accepted", ip)
		}
	}
	if err := New("", subnet).Ensure(); err == nil {
		t.Fatal("empty bridge name accepted")
	}
	if err := New("averyveryverylongname", subnet).Ensure(); err == nil {
		t.Fatal("over-long bridge name accepted")
	}
}

func assertRuleCounts(t *testing.T, m *Manager, fwd, post int) {
	t.Helper()
	c, err := m.conn()
	if err != nil {
		t.Fatal(err)
	}
	tb := m.table()
	for name, want := range map[string]int{ForwardChain: fwd, PostroutingName: post} {
		rules, err := c.GetRules(tb, &nftables.Chain{Name: name, Table: tb})
		if err != nil {
			t.Fatalf("list chain %s: %v", name, err)
		}
		if len(rules) != want {
			t.Fatalf("chain %s has %d rules, want %d", name, len(rules), want)
		}
	}
}

// assertGuests checks the set through Guests and, independently, through
// the nft CLI where it is installed.
func assertGuests(t *testing.T, tp *topo, m *Manager, want ...string) {
	t.Helper()
	ips, err := m.Guests()
	if err != nil {
		t.Fatal(err)
	}
	got := []string{}
	for _, ip := range ips {
		got = append(got, ip.String())
	}
	if want == nil {
		want = []string{}
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Guests = %v, want %v", got, want)
	}
	if !testenv.HaveTool(t, "nft") { // the cross-check with nft's own view
		return
	}
	out, err := exec.Command("ip", "netns", "exec", tp.d, "nft", "list", "set", "inet", TableName, SetName).CombinedOutput()
	if err != nil {
		t.Fatalf("nft list set: %v: %s", err, out)
	}
	for _, ip := range []string{g1IP, g2IP} {
		listed := strings.Contains(string(out), ip)
		wanted := strings.Contains(strings.Join(want, " "), ip)
		if listed != wanted {
			t.Fatalf("nft list set: %s listed=%v, want %v:\n%s", ip, listed, wanted, out)
		}
	}
}

func assertNoTable(t *testing.T, tp *topo) {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(tp.dFd))
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		if tb.Name == TableName {
			t.Fatalf("table %s (family %d) still there after Teardown", tb.Name, tb.Family)
		}
	}
}

func logRuleset(t *testing.T, ns string) {
	if _, err := exec.LookPath("nft"); err != nil {
		return
	}
	out, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "table", "inet", TableName).CombinedOutput()
	if err != nil {
		t.Fatalf("nft list table: %v: %s", err, out)
	}
	t.Logf("nft list table inet %s:\n%s", TableName, out)
}
