package vmdns

import (
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// fakeWriter is a dns.ResponseWriter whose query came from any address we
// like: the access rules are tested without sockets on guest addresses.
type fakeWriter struct {
	remote net.Addr
	got    *dns.Msg
}

func (w *fakeWriter) LocalAddr() net.Addr {
	return &net.UDPAddr{IP: net.ParseIP("172.30.0.1"), Port: 53}
}
func (w *fakeWriter) RemoteAddr() net.Addr        { return w.remote }
func (w *fakeWriter) WriteMsg(m *dns.Msg) error   { w.got = m; return nil }
func (w *fakeWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *fakeWriter) Close() error                { return nil }
func (w *fakeWriter) TsigStatus() error           { return nil }
func (w *fakeWriter) TsigTimersOnly(bool)         {}
func (w *fakeWriter) Hijack()                     {}

func ask(t *testing.T, s *Server, from net.Addr, name string, qtype uint16) *dns.Msg {
	t.Helper()
	req := new(dns.Msg)
	req.SetQuestion(dns.Fqdn(name), qtype)
	w := &fakeWriter{remote: from}
	s.serveDNS(w, req)
	if w.got == nil {
		t.Fatalf("%s from %s: no answer", name, from)
	}
	return w.got
}

func udpFrom(ip string) net.Addr { return &net.UDPAddr{IP: net.ParseIP(ip), Port: 40000} }
func tcpFrom(ip string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000} }

// TestAccessBySource: the host gets everything; a registered guest gets
// .vm and PTR, and outside names only with recursion (NAT); anybody else,
// including a guest after RemoveClient, is REFUSED and nothing reaches the
// upstream for them.
func TestAccessBySource(t *testing.T) {
	up, hits := upstream(t)
	s := New("172.30.0.1:53", []string{up}) // never started: serveDNS is called directly
	s.Set("web", net.ParseIP("172.30.0.5"))
	s.AllowClient(net.ParseIP("172.30.0.5"), false) // no NAT
	s.AllowClient(net.ParseIP("172.30.0.6"), true)  // NAT

	type want struct {
		rcode   int
		forward bool // the upstream saw it
	}
	refused := want{rcode: dns.RcodeRefused}
	cases := []struct {
		from  net.Addr
		name  string
		qtype uint16
		want  want
	}{
		// The host: the bridge address itself, and loopback.
		{udpFrom("172.30.0.1"), "web.vm", dns.TypeA, want{dns.RcodeSuccess, false}},
		{udpFrom("172.30.0.1"), "example.test", dns.TypeA, want{dns.RcodeSuccess, true}},
		{udpFrom("127.0.0.1"), "example.test", dns.TypeA, want{dns.RcodeSuccess, true}},
		{tcpFrom("127.0.0.1"), "web.vm", dns.TypeA, want{dns.RcodeSuccess, false}},
		{udpFrom("::1"), "web.vm", dns.TypeA, want{dns.RcodeSuccess, false}},
		// A guest without NAT: its own zone only.
		{udpFrom("172.30.0.5"), "web.vm", dns.TypeA, want{dns.RcodeSuccess, false}},
		{udpFrom("172.30.0.5"), "nope.vm", dns.TypeA, want{dns.RcodeNameError, false}},
		{tcpFrom("172.30.0.5"), "5.0.30.172.in-addr.arpa", dns.TypePTR, want{dns.RcodeSuccess, false}},
		{udpFrom("172.30.0.5"), "example.test", dns.TypeA, refused},
		{udpFrom("172.30.0.5"), "7.2.0.192.in-addr.arpa", dns.TypePTR, refused},
		// A guest with NAT: forwarded as well.
		{udpFrom("172.30.0.6"), "web.vm", dns.TypeA, want{dns.RcodeSuccess, false}},
		{udpFrom("172.30.0.6"), "example.test", dns.TypeA, want{dns.RcodeSuccess, true}},
		// Strangers: another address in the subnet, another loopback
		// address, an outside address: even .vm is refused.
		{udpFrom("172.30.0.7"), "web.vm", dns.TypeA, refused},
		{udpFrom("127.0.0.2"), "web.vm", dns.TypeA, refused},
		{tcpFrom("198.51.100.9"), "example.test", dns.TypeA, refused},
	}
	for _, c := range cases {
		before := hits.Load()
		r := ask(t, s, c.from, c.name, c.qtype)
		if r.Rcode != c.want.rcode {
			t.Errorf("%s from %s: rcode %s, want %s", c.name, c.from, dns.RcodeToString[r.Rcode], dns.RcodeToString[c.want.rcode])
		}
		if fwd := hits.Load() != before; fwd != c.want.forward {
			t.Errorf("%s from %s: forwarded=%v, want %v", c.name, c.from, fwd, c.want.forward)
		}
	}
	// What a client is told about recursion matches what it may do.
	if r := ask(t, s, udpFrom("172.30.0.5"), "web.vm", dns.TypeA); r.RecursionAvailable {
		t.Error("a guest without recursion was told RA")
	}
	if r := ask(t, s, udpFrom("172.30.0.6"), "web.vm", dns.TypeA); !r.RecursionAvailable {
		t.Error("a guest with recursion was not told RA")
	}

	// Changing and withdrawing access.
	s.AllowClient(net.ParseIP("172.30.0.5"), true)
	if r := ask(t, s, udpFrom("172.30.0.5"), "example.test", dns.TypeA); r.Rcode != dns.RcodeSuccess {
		t.Errorf("after AllowClient(recurse): %v", r)
	}
	s.RemoveClient(net.ParseIP("172.30.0.5"))
	if r := ask(t, s, udpFrom("172.30.0.5"), "web.vm", dns.TypeA); r.Rcode != dns.RcodeRefused {
		t.Errorf("after RemoveClient: %v", r)
	}
	if got := s.Clients(); len(got) != 1 || !got["172.30.0.6"] {
		t.Errorf("Clients = %v", got)
	}
	s.AllowClient(nil, true) // ignored
	if len(s.Clients()) != 1 {
		t.Errorf("nil address registered: %v", s.Clients())
	}
	if st := s.Stats(); st.Refused == 0 {
		t.Errorf("Stats = %+v, want refusals counted", st)
	}
}

// TestTokenBucket drives the limiter with a fake clock.
func TestTokenBucket(t *testing.T) {
	s := New("172.30.0.1:53", nil)
	s.Rate, s.Burst = 10, 5
	now := time.Unix(1000, 0)
	s.now = func() time.Time { return now }
	g, g2 := udpFrom("172.30.0.5"), udpFrom("172.30.0.6")
	s.AllowClient(net.ParseIP("172.30.0.5"), false)
	s.AllowClient(net.ParseIP("172.30.0.6"), false)
	take := func(from net.Addr, n int) (ok int) {
		for i := 0; i < n; i++ {
			if s.admit(from) {
				ok++
			}
		}
		return ok
	}
	if got := take(g, 20); got != 5 {
		t.Fatalf("burst: %d admitted, want 5", got)
	}
	if got := take(g2, 20); got != 5 {
		t.Fatalf("another guest has its own bucket: %d admitted, want 5", got)
	}
	// Re-registering keeps the bucket (changing recursion is no reset).
	s.AllowClient(net.ParseIP("172.30.0.6"), true)
	if got := take(g2, 1); got != 0 {
		t.Fatalf("re-registered guest got a fresh bucket")
	}
	now = now.Add(300 * time.Millisecond) // 3 tokens
	if got := take(g, 20); got != 3 {
		t.Fatalf("after 300ms: %d admitted, want 3", got)
	}
	now = now.Add(time.Hour) // refills to the burst, no more
	if got := take(g, 20); got != 5 {
		t.Fatalf("after an hour: %d admitted, want 5", got)
	}
	// Strangers share one bucket; the host has none.
	if got := take(udpFrom("172.30.0.7"), 3) + take(udpFrom("10.9.9.9"), 10); got != 5 {
		t.Fatalf("strangers: %d admitted, want 5 in all", got)
	}
	if got := take(udpFrom("172.30.0.1"), 1000); got != 1000 {
		t.Fatalf("host: %d of 1000 admitted", got)
	}
	if st := s.Stats(); st.Dropped == 0 {
		t.Fatalf("Stats = %+v, want drops counted", st)
	}
}

// TestFloodIsBounded floods a real server over loopback from a registered
// "guest" (127.0.0.2) for a second, at several thousand queries a second:
// the answers it gets are bounded by burst + rate × time, the rest are
// dropped unanswered, and meanwhile the host and another guest are still
// answered. A stranger (127.0.0.4) is REFUSED.
//
// Clients here retry (as resolvers do): on a machine shared with other
// tests the flood can still outrun the server's reads and fill the socket
// buffer, which is what antispoof's per-tap kernel limit prevents for real
// guests.
func TestFloodIsBounded(t *testing.T) {
	s := New("127.0.0.1:0", nil)
	s.Rate, s.Burst = 50, 20
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	s.Set("web", net.ParseIP("172.30.0.5"))
	s.AllowClient(net.ParseIP("127.0.0.2"), false)
	s.AllowClient(net.ParseIP("127.0.0.3"), false)
	srv, _ := net.ResolveUDPAddr("udp", s.Addr())

	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP("127.0.0.2")})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := new(dns.Msg)
	req.SetQuestion("web.vm.", dns.TypeA)
	pkt, _ := req.Pack()

	answered := make(chan int)
	go func() {
		n := 0
		buf := make([]byte, 512)
		for {
			conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			if _, err := conn.Read(buf); err != nil {
				answered <- n
				return
			}
			n++
		}
	}()
	sentc := make(chan int)
	start := time.Now()
	go func() {
		sent := 0
		for time.Since(start) < time.Second {
			for i := 0; i < 10; i++ {
				if _, err := conn.WriteToUDP(pkt, srv); err == nil {
					sent++
				}
			}
			time.Sleep(time.Millisecond)
		}
		sentc <- sent
	}()
	// Mid-flood, others are served.
	time.Sleep(200 * time.Millisecond)
	if r := retryQuery(t, "127.0.0.1", s.Addr()); r.Rcode != dns.RcodeSuccess {
		t.Fatalf("host during the flood: %v", r)
	}
	if r := retryQuery(t, "127.0.0.3", s.Addr()); r.Rcode != dns.RcodeSuccess {
		t.Fatalf("another guest during the flood: %v", r)
	}
	sent := <-sentc
	elapsed := time.Since(start)
	n := <-answered
	limit := float64(s.Burst) + s.Rate*(elapsed.Seconds()+0.5) + 5
	t.Logf("%d queries in %v: %d answered (limit %.0f), stats %+v", sent, elapsed, n, limit, s.Stats())
	if n == 0 || float64(n) > limit {
		t.Fatalf("flooding guest got %d answers, want 1..%.0f", n, limit)
	}
	if d := s.Stats().Dropped; d < uint64(sent-n)/2 {
		// Some datagrams may be lost by the socket rather than dropped by us.
		t.Fatalf("dropped %d of %d unanswered", d, sent-n)
	}
	if r := retryQuery(t, "127.0.0.4", s.Addr()); r.Rcode != dns.RcodeRefused {
		t.Fatalf("stranger: %v", r)
	}
}

// retryQuery asks for web.vm from src, retrying a lost datagram as a
// resolver would (up to 10 × 300 ms).
func retryQuery(t *testing.T, src, addr string) *dns.Msg {
	t.Helper()
	var err error
	for i := 0; i < 10; i++ {
		var r *dns.Msg
		if r, err = queryFrom(src, addr, "web.vm", 300*time.Millisecond); err == nil {
			return r
		}
	}
	t.Fatalf("web.vm from %s: %v", src, err)
	return nil
}

func queryFrom(src, addr, name string, timeout time.Duration) (*dns.Msg, error) {
	c := &dns.Client{Net: "udp", Timeout: timeout, Dialer: &net.Dialer{Timeout: timeout, LocalAddr: &net.UDPAddr{IP: net.ParseIP(src)}}}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	r, _, err := c.Exchange(m, addr)
	return r, err
}

// TestTCPOverLimit: a TCP connection takes a token, and so does each
// query on it; over the limit the query is unanswered and the connection
// closed, and new connections are closed at once.
func TestTCPOverLimit(t *testing.T) {
	s := New("127.0.0.1:0", nil)
	s.Rate, s.Burst = 1, 2
	frozen := time.Unix(1000, 0)
	s.now = func() time.Time { return frozen } // no refill
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	s.Set("web", net.ParseIP("172.30.0.5"))
	s.AllowClient(net.ParseIP("127.0.0.2"), false)
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 2 * time.Second}
	nc, err := d.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	c := &dns.Conn{Conn: nc}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	m := new(dns.Msg)
	m.SetQuestion("web.vm.", dns.TypeA)
	if err := c.WriteMsg(m); err != nil {
		t.Fatal(err)
	}
	if r, err := c.ReadMsg(); err != nil || r.Rcode != dns.RcodeSuccess {
		t.Fatalf("first query (tokens 2 → 0): %v, %v", r, err)
	}
	c.WriteMsg(m)
	if r, err := c.ReadMsg(); err == nil {
		t.Fatalf("second query over the limit answered: %v", r)
	}
	nc2, err := d.Dial("tcp", s.Addr())
	if err == nil {
		nc2.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, err := nc2.Read(make([]byte, 1)); err == nil {
			t.Fatal("a new connection over the limit stayed open")
		}
		nc2.Close()
	}
	if st := s.Stats(); st.Dropped < 2 {
		t.Fatalf("Stats = %+v, want the query and the connection dropped", st)
	}
	// The host is not limited.
	if r := query(t, s.Addr(), "tcp", "web.vm", dns.TypeA); r.Rcode != dns.RcodeSuccess {
		t.Fatalf("host over TCP: %v", r)
	}
}
