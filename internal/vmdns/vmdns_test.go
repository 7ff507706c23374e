package vmdns

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// startServer runs a Server on a random loopback port. The /24 reverse zone
// is set to the guest subnet the tests use, since the listen address is
// loopback.
func startServer(t *testing.T, upstreams ...string) *Server {
	t.Helper()
	s := New("127.0.0.1:0", upstreams)
	_, s.Subnet, _ = net.ParseCIDR("172.30.0.0/24")
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func query(t *testing.T, addr, network, name string, qtype uint16) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: network, Timeout: 5 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s %s %s: %v", network, name, dns.TypeToString[qtype], err)
	}
	return r
}

func TestARecordAndPTR(t *testing.T) {
	s := startServer(t)
	s.Set("web", net.ParseIP("172.30.0.5"))
	for _, network := range []string{"udp", "tcp"} {
		r := query(t, s.Addr(), network, "web.vm", dns.TypeA)
		if r.Rcode != dns.RcodeSuccess || !r.Authoritative || len(r.Answer) != 1 {
			t.Fatalf("%s: A web.vm: %v", network, r)
		}
		a := r.Answer[0].(*dns.A)
		if !a.A.Equal(net.ParseIP("172.30.0.5")) || a.Hdr.Ttl != TTL {
			t.Fatalf("%s: A web.vm = %v", network, a)
		}
	}
	// Case-insensitive, and AAAA of an existing name is NODATA, not NXDOMAIN.
	if r := query(t, s.Addr(), "udp", "WEB.Vm", dns.TypeA); len(r.Answer) != 1 {
		t.Fatalf("WEB.Vm: %v", r)
	}
	if r := query(t, s.Addr(), "udp", "web.vm", dns.TypeAAAA); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Fatalf("AAAA web.vm: %v", r)
	}
	r := query(t, s.Addr(), "udp", "5.0.30.172.in-addr.arpa", dns.TypePTR)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].(*dns.PTR).Ptr != "web.vm." {
		t.Fatalf("PTR 172.30.0.5: %v", r)
	}
}

func TestNXDOMAIN(t *testing.T) {
	s := startServer(t)
	s.Set("web", net.ParseIP("172.30.0.5"))
	for _, name := range []string{"nope.vm", "x.web.vm"} {
		r := query(t, s.Addr(), "udp", name, dns.TypeA)
		if r.Rcode != dns.RcodeNameError || !r.Authoritative {
			t.Fatalf("%s: want authoritative NXDOMAIN, got %v", name, r)
		}
	}
	// Unknown address in our subnet: NXDOMAIN, not forwarded (no upstreams
	// configured, so forwarding would have given SERVFAIL).
	r := query(t, s.Addr(), "udp", "9.0.30.172.in-addr.arpa", dns.TypePTR)
	if r.Rcode != dns.RcodeNameError {
		t.Fatalf("PTR unknown 172.30.0.9: %v", r)
	}
	s.Remove("web")
	if r := query(t, s.Addr(), "udp", "web.vm", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Fatalf("after Remove: %v", r)
	}
	if r := query(t, s.Addr(), "udp", "5.0.30.172.in-addr.arpa", dns.TypePTR); r.Rcode != dns.RcodeNameError {
		t.Fatalf("PTR after Remove: %v", r)
	}
	if len(s.Records()) != 0 {
		t.Fatalf("records after Remove: %v", s.Records())
	}
}

func TestSetMovesAddress(t *testing.T) {
	s := New("127.0.0.1:0", nil)
	s.Set("a", net.ParseIP("172.30.0.5"))
	s.Set("a", net.ParseIP("172.30.0.6"))
	s.Set("b", net.ParseIP("172.30.0.5"))
	s.Remove("a")
	want := map[string]net.IP{"b": net.ParseIP("172.30.0.5").To4()}
	if got := s.Records(); !reflect.DeepEqual(got, want) {
		t.Fatalf("records = %v, want %v", got, want)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if !reflect.DeepEqual(s.ptrs, map[string]string{"172.30.0.5": "b"}) {
		t.Fatalf("ptrs = %v", s.ptrs)
	}
}

// upstream runs a second miekg/dns server on loopback standing in for the
// host's resolver: it answers example.test. with 192.0.2.7.
func upstream(t *testing.T) (string, *atomic.Int32) {
	t.Helper()
	hits := new(atomic.Int32)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		hits.Add(1)
		m := new(dns.Msg)
		m.SetReply(req)
		if req.Question[0].Name == "example.test." {
			m.Answer = append(m.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: "example.test.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A:   net.ParseIP("192.0.2.7"),
			})
		} else {
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: h, NotifyStartedFunc: func() { close(started) }}
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String(), hits
}

func TestForwarding(t *testing.T) {
	up, hits := upstream(t)
	// A dead upstream first: the server must move on to the next one.
	dead, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close() // bound but never answers
	s := startServer(t, dead.LocalAddr().String(), up)
	s.Set("web", net.ParseIP("172.30.0.5"))

	r := query(t, s.Addr(), "udp", "example.test", dns.TypeA)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || !r.Answer[0].(*dns.A).A.Equal(net.ParseIP("192.0.2.7")) {
		t.Fatalf("forwarded example.test: %v", r)
	}
	if r := query(t, s.Addr(), "udp", "other.test", dns.TypeA); r.Rcode != dns.RcodeNameError || r.Authoritative {
		t.Fatalf("forwarded NXDOMAIN: %v", r)
	}
	// .vm and our reverse zone never reach the upstream.
	before := hits.Load()
	query(t, s.Addr(), "udp", "nope.vm", dns.TypeA)
	query(t, s.Addr(), "udp", "9.0.30.172.in-addr.arpa", dns.TypePTR)
	if hits.Load() != before {
		t.Fatalf("upstream saw %d queries for names we own", hits.Load()-before)
	}
	// A reverse name outside the subnet is forwarded.
	query(t, s.Addr(), "udp", "7.2.0.192.in-addr.arpa", dns.TypePTR)
	if hits.Load() != before+1 {
		t.Fatalf("reverse query outside subnet not forwarded")
	}
}

func TestForwardingFailureIsSERVFAIL(t *testing.T) {
	dead, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	s := startServer(t, dead.LocalAddr().String())
	c := &dns.Client{Net: "udp", Timeout: ForwardTimeout + 5*time.Second}
	m := new(dns.Msg)
	m.SetQuestion("example.test.", dns.TypeA)
	r, _, err := c.Exchange(m, s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("want SERVFAIL, got %v", r)
	}
	// No upstreams at all: SERVFAIL at once.
	s2 := startServer(t)
	if r := query(t, s2.Addr(), "udp", "example.test", dns.TypeA); r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("no upstreams: %v", r)
	}
}

func TestConcurrentSetRemoveWhileQuerying(t *testing.T) {
	s := startServer(t)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				name := fmt.Sprintf("vm%d-%d", w, i%10)
				s.Set(name, net.IPv4(172, 30, 0, byte(10+w*20+i%10)))
				_ = s.Records()
				if i%3 == 0 {
					s.Remove(name)
				}
			}
		}(w)
	}
	errs := make(chan error, 2)
	for q := 0; q < 2; q++ {
		go func() {
			c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
			for i := 0; i < 100; i++ {
				select {
				case <-stop:
					errs <- nil
					return
				default:
				}
				m := new(dns.Msg)
				m.SetQuestion(fmt.Sprintf("vm0-%d.vm.", i%10), dns.TypeA)
				r, _, err := c.Exchange(m, s.Addr())
				if err != nil {
					errs <- err
					return
				}
				if r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError {
					errs <- fmt.Errorf("rcode %s", dns.RcodeToString[r.Rcode])
					return
				}
			}
			errs <- nil
		}()
	}
	wg.Wait()
	close(stop)
	for q := 0; q < 2; q++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// Whatever survived the churn, the server answers exactly the records
	// it reports.
	recs := s.Records()
	for name, ip := range recs {
		r := query(t, s.Addr(), "udp", name+".vm", dns.TypeA)
		if len(r.Answer) != 1 || !r.Answer[0].(*dns.A).A.Equal(ip) {
			t.Fatalf("%s: %v, want %v", name, r, ip)
		}
	}
}

func TestStartErrors(t *testing.T) {
	s := startServer(t)
	dup := New(s.Addr(), nil)
	if err := dup.Start(); err == nil {
		dup.Close()
		t.Fatal("second server on the same address started")
	}
	if err := New("nonsense", nil).Start(); err == nil {
		t.Fatal("bad address accepted")
	}
	if err := s.Start(); err == nil {
		t.Fatal("double Start accepted")
	}
	// Close, then Start again on a fresh port keeps the records.
	s.Set("web", net.ParseIP("172.30.0.5"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if r := query(t, s.Addr(), "tcp", "web.vm", dns.TypeA); len(r.Answer) != 1 {
		t.Fatalf("after restart: %v", r)
	}
}

func TestDefaultSubnet(t *testing.T) {
	s := New("172.30.4.1:53", nil)
	if s.Subnet.String() != "172.30.4.0/24" {
		t.Fatalf("subnet = %v", s.Subnet)
	}
}

func TestUpstreamsFrom(t *testing.T) {
	dir := t.TempDir()
	stub := filepath.Join(dir, "stub.conf")
	real := filepath.Join(dir, "real.conf")
	os.WriteFile(stub, []byte("# managed by resolved\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n"), 0o644)
	os.WriteFile(real, []byte("nameserver 192.0.2.53\nnameserver 2001:db8::53\nnameserver fe80::1%eth0\n"), 0o644)
	want := []string{"192.0.2.53:53", "[2001:db8::53]:53", "[fe80::1%eth0]:53"}
	if got := upstreamsFrom(stub, real); !reflect.DeepEqual(got, want) {
		t.Fatalf("stub then real: %v, want %v", got, want)
	}
	plain := filepath.Join(dir, "plain.conf")
	os.WriteFile(plain, []byte("nameserver 198.51.100.1\n"), 0o644)
	if got := upstreamsFrom(plain, real); !reflect.DeepEqual(got, []string{"198.51.100.1:53"}) {
		t.Fatalf("plain: %v", got)
	}
	if got := upstreamsFrom(stub, filepath.Join(dir, "missing")); got != nil {
		t.Fatalf("stub only: %v", got)
	}
}

// resolvectl cannot run here (no systemd-resolved in the test machines), so
// only the argument building and validation are tested.
func TestResolvedCommands(t *testing.T) {
	got, err := setupResolvedCmds("banger0", "172.30.0.1")
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"resolvectl", "dns", "banger0", "172.30.0.1"},
		{"resolvectl", "domain", "banger0", "~vm"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("setup = %v", got)
	}
	got, err = teardownResolvedCmds("banger0")
	if err != nil || !reflect.DeepEqual(got, [][]string{{"resolvectl", "revert", "banger0"}}) {
		t.Fatalf("teardown = %v, %v", got, err)
	}
	for _, bad := range []string{"", "-x", "a b", "averyveryverylongname"} {
		if _, err := setupResolvedCmds(bad, "172.30.0.1"); err == nil {
			t.Fatalf("bridge %q accepted", bad)
		}
	}
	if _, err := setupResolvedCmds("banger0", "not-an-ip"); err == nil {
		t.Fatal("bad ip accepted")
	}
}
