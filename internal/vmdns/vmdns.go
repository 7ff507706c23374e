// Package vmdns is the daemon's DNS server for guests and, once
// systemd-resolved is pointed at it, for the host: it answers A records
// `<name>.vm.` and PTR records for running VMs, says NXDOMAIN for every
// other `.vm` name and every unknown address in the guest subnet, and
// forwards everything else to the host's resolvers.
//
// The server is authoritative for `vm.` and for the reverse zone of its
// subnet only; it never caches forwarded answers (the upstream does that).
//
// Who may ask (the source address of each query):
//
//   - the host: the listen address itself (what a host process talking to
//     the bridge address sends from) and 127.0.0.1/::1: everything, no limit;
//   - a guest the daemon registered with AllowClient: `.vm` and the reverse
//     zone, and forwarding only when registered with recursion (the daemon
//     grants it to guests with NAT, who can use the answers; a guest without
//     NAT gets REFUSED for outside names, so it cannot make the host resolve
//     for it);
//   - anybody else: REFUSED.
//
// The source address can be trusted because package antispoof drops every
// frame from a tap whose IPv4 source is not its VM's, and the kernel drops
// packets from outside that carry one of the host's own addresses.
//
// Every query from a guest or a stranger first takes a token from a
// per-source token bucket (Rate per second, Burst deep; strangers share one
// bucket), and so does every TCP connection they open: over the limit, a
// UDP query is dropped unanswered (before it is parsed or given a
// goroutine) and a TCP connection is closed. So a flooding guest costs the
// daemon at most the reads of its packets, and memory only for the buckets
// of registered guests.
package vmdns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// Domain is the zone the server is authoritative for.
const Domain = "vm."

// TTL of every answer we own. Small, because records follow VM state and a
// stopped VM's name must not linger in a guest's or the host's cache.
const TTL = 5

// ForwardTimeout bounds one exchange with one upstream. At most
// maxUpstreams are tried per query, so a query is answered (SERVFAIL at
// worst) within maxUpstreams*ForwardTimeout.
const ForwardTimeout = 2 * time.Second

const maxUpstreams = 3

// Default per-source limits: a guest may ask DefaultRate queries a second
// on average, in bursts of up to DefaultBurst. A resolver that retries and
// asks A and AAAA for a handful of names stays far below.
const (
	DefaultRate  = 100
	DefaultBurst = 200
)

// Server answers DNS over UDP and TCP on one address.
type Server struct {
	addr      string
	upstreams []string

	// Subnet is the guest subnet whose reverse zone the server owns: a PTR
	// query for an address in it that has no record gets NXDOMAIN instead
	// of being forwarded. New sets it to the /24 around the listen address
	// (banger's bridge subnet); change it before Start if yours differs.
	Subnet *net.IPNet

	// mu guards names and ptrs. Queries take the read lock only for the
	// map lookup; Set/Remove take the write lock and keep both maps in step.
	mu    sync.RWMutex
	names map[string]net.IP // "web" -> 172.30.0.5 (lowercase label, no domain)
	ptrs  map[string]string // "172.30.0.5" -> "web"

	// Rate (queries per second) and Burst bound what one guest, or all
	// strangers together, may ask; set them before Start. New sets
	// DefaultRate and DefaultBurst.
	Rate  float64
	Burst int

	// host is the listen address: queries from it (and from loopback) are
	// the host's.
	host netip.Addr
	now  func() time.Time // the limiter's clock; tests replace it

	// cmu guards clients and strangers: who may ask, and the token
	// buckets. Taken once per query and per TCP connection, for a map
	// lookup and a little arithmetic; never held across I/O.
	cmu       sync.Mutex
	clients   map[netip.Addr]*client
	strangers bucket

	dropped atomic.Uint64 // queries and connections over a limit
	refused atomic.Uint64 // REFUSED answers

	// srvMu guards udp, tcp and bound (lifecycle only, never taken by queries).
	srvMu sync.Mutex
	udp   *dns.Server
	tcp   *dns.Server
	bound string
}

// client is one registered guest.
type client struct {
	recurse bool
	bucket  bucket
}

// bucket is a token bucket: tokens refill at the server's Rate up to its
// Burst, and each query or connection takes one.
type bucket struct {
	tokens float64
	last   time.Time
}

func (b *bucket) take(now time.Time, rate float64, burst int) bool {
	if b.last.IsZero() {
		b.tokens = float64(burst)
	} else if d := now.Sub(b.last).Seconds(); d > 0 {
		b.tokens += d * rate
		if b.tokens > float64(burst) {
			b.tokens = float64(burst)
		}
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// New returns a server that will listen on addr (for example
// "172.30.0.1:53") and forward non-`.vm` queries to upstreams ("ip:port").
// Nothing is bound until Start.
func New(addr string, upstreams []string) *Server {
	s := &Server{
		addr:      addr,
		upstreams: append([]string(nil), upstreams...),
		names:     map[string]net.IP{},
		ptrs:      map[string]string{},
		Rate:      DefaultRate,
		Burst:     DefaultBurst,
		now:       time.Now,
		clients:   map[netip.Addr]*client{},
	}
	if host, _, err := net.SplitHostPort(addr); err == nil {
		if ip := net.ParseIP(host).To4(); ip != nil {
			s.Subnet = &net.IPNet{IP: ip.Mask(net.CIDRMask(24, 32)), Mask: net.CIDRMask(24, 32)}
		}
		if a, err := netip.ParseAddr(host); err == nil {
			s.host = a.Unmap()
		}
	}
	return s
}

// AllowClient lets the guest at ip ask: `.vm` and reverse-zone names, and
// with recurse also every other name (forwarded). Registering an address
// again changes recurse and keeps its rate-limit state. A nil or invalid
// ip is ignored.
func (s *Server) AllowClient(ip net.IP, recurse bool) {
	a, ok := addrOf(ip)
	if !ok {
		return
	}
	s.cmu.Lock()
	defer s.cmu.Unlock()
	if c, ok := s.clients[a]; ok {
		c.recurse = recurse
		return
	}
	s.clients[a] = &client{recurse: recurse}
}

// RemoveClient withdraws what AllowClient granted; ip's queries are
// REFUSED from now on. Unknown addresses are ignored.
func (s *Server) RemoveClient(ip net.IP) {
	if a, ok := addrOf(ip); ok {
		s.cmu.Lock()
		delete(s.clients, a)
		s.cmu.Unlock()
	}
}

// Clients returns the registered guests and whether each may recurse.
func (s *Server) Clients() map[string]bool {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	out := make(map[string]bool, len(s.clients))
	for a, c := range s.clients {
		out[a.String()] = c.recurse
	}
	return out
}

// Stats counts what the access rules turned away.
type Stats struct {
	Dropped uint64 // UDP queries dropped and TCP connections closed over a rate limit
	Refused uint64 // queries answered REFUSED
}

// Stats returns the counts since New.
func (s *Server) Stats() Stats {
	return Stats{Dropped: s.dropped.Load(), Refused: s.refused.Load()}
}

func addrOf(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip)
	return a.Unmap(), ok && a.IsValid()
}

// source is a query's origin as the access rules see it.
type source int

const (
	fromStranger source = iota
	fromGuest
	fromHost
)

func remoteAddr(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.UDPAddr:
		ip, _ := addrOf(a.IP)
		return ip
	case *net.TCPAddr:
		ip, _ := addrOf(a.IP)
		return ip
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

var (
	loopback4 = netip.MustParseAddr("127.0.0.1")
	loopback6 = netip.IPv6Loopback()
)

func (s *Server) isHost(a netip.Addr) bool {
	return a == loopback4 || a == loopback6 || (s.host.IsValid() && !s.host.IsUnspecified() && a == s.host)
}

// classify says who sent a query, and whether it may be forwarded.
func (s *Server) classify(from net.Addr) (source, bool) {
	a := remoteAddr(from)
	if s.isHost(a) {
		return fromHost, true
	}
	s.cmu.Lock()
	defer s.cmu.Unlock()
	if c, ok := s.clients[a]; ok {
		return fromGuest, c.recurse
	}
	return fromStranger, false
}

// admit takes a token from the bucket of from's source: its own for a
// registered guest, the shared one for strangers; the host is not limited.
func (s *Server) admit(from net.Addr) bool {
	a := remoteAddr(from)
	if s.isHost(a) {
		return true
	}
	s.cmu.Lock()
	defer s.cmu.Unlock()
	b := &s.strangers
	if c, ok := s.clients[a]; ok {
		b = &c.bucket
	}
	if b.take(s.now(), s.Rate, s.Burst) {
		return true
	}
	s.dropped.Add(1)
	return false
}

// admitReader drops over-limit queries as they are read: no parse and no
// goroutine for them.
type admitReader struct {
	dns.Reader
	s *Server
}

var errOverLimit = errors.New("vmdns: source over its query rate")

func (r admitReader) ReadUDP(conn *net.UDPConn, timeout time.Duration) ([]byte, *dns.SessionUDP, error) {
	for {
		m, sess, err := r.Reader.ReadUDP(conn, timeout)
		if err != nil || r.s.admit(sess.RemoteAddr()) {
			return m, sess, err
		}
	}
}

// ReadTCP ends the connection (the server closes it on a read error) once
// its source is over the limit.
func (r admitReader) ReadTCP(conn net.Conn, timeout time.Duration) ([]byte, error) {
	m, err := r.Reader.ReadTCP(conn, timeout)
	if err == nil && !r.s.admit(conn.RemoteAddr()) {
		return nil, errOverLimit
	}
	return m, err
}

// admitListener closes, at once, TCP connections from a source over its
// limit, so idle connections cannot pile up either.
type admitListener struct {
	net.Listener
	s *Server
}

func (l admitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil || l.s.admit(c.RemoteAddr()) {
			return c, err
		}
		c.Close()
	}
}

// Start binds UDP and TCP on the server's address and serves in the
// background. Bind errors (address in use, address not on this host) are
// returned here, not later. With port 0 the UDP port is chosen by the
// kernel and TCP binds the same port; Addr reports it.
func (s *Server) Start() error {
	s.srvMu.Lock()
	defer s.srvMu.Unlock()
	if s.udp != nil {
		return fmt.Errorf("vmdns: server on %s already started", s.bound)
	}
	pc, ln, err := listenBoth(s.addr)
	if err != nil {
		return err
	}
	h := dns.HandlerFunc(s.serveDNS)
	dec := func(r dns.Reader) dns.Reader { return admitReader{Reader: r, s: s} }
	udp := &dns.Server{PacketConn: pc, Handler: h, DecorateReader: dec}
	tcp := &dns.Server{Listener: admitListener{Listener: ln, s: s}, Handler: h, DecorateReader: dec,
		ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}
	for _, srv := range []*dns.Server{udp, tcp} {
		started := make(chan struct{})
		failed := make(chan error, 1)
		srv.NotifyStartedFunc = func() { close(started) }
		go func() { failed <- srv.ActivateAndServe() }()
		select {
		case <-started:
		case err := <-failed:
			pc.Close()
			ln.Close()
			return fmt.Errorf("vmdns: serve on %s: %w", pc.LocalAddr(), err)
		}
	}
	s.udp, s.tcp, s.bound = udp, tcp, pc.LocalAddr().String()
	return nil
}

// listenBoth binds UDP, then TCP on the same port. With port 0 the TCP
// bind can lose a race for the kernel-chosen port, so it retries a few
// times with fresh ports.
func listenBoth(addr string) (net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("vmdns: listen address %q: %w (want IP:PORT, e.g. 172.30.0.1:53)", addr, err)
	}
	tries := 1
	if port == "0" {
		tries = 5
	}
	var lastErr error
	for i := 0; i < tries; i++ {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("vmdns: listen udp %s: %w (is the bridge address configured and port 53 free?)", addr, err)
		}
		p := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err := net.Listen("tcp", net.JoinHostPort(host, fmt.Sprint(p)))
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		lastErr = err
	}
	return nil, nil, fmt.Errorf("vmdns: listen tcp %s: %w (is port 53 free on that address?)", addr, lastErr)
}

// Addr is the bound address ("ip:port"), or "" before Start.
func (s *Server) Addr() string {
	s.srvMu.Lock()
	defer s.srvMu.Unlock()
	return s.bound
}

// Close stops both listeners. Records are kept, so a later Start serves
// them again.
func (s *Server) Close() error {
	s.srvMu.Lock()
	defer s.srvMu.Unlock()
	if s.udp == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	err1 := s.udp.ShutdownContext(ctx)
	err2 := s.tcp.ShutdownContext(ctx)
	s.udp, s.tcp, s.bound = nil, nil, ""
	if err1 != nil {
		return fmt.Errorf("vmdns: shutdown udp: %w", err1)
	}
	if err2 != nil {
		return fmt.Errorf("vmdns: shutdown tcp: %w", err2)
	}
	return nil
}

// Set publishes `<name>.vm.` -> ip and the PTR record for ip. A name that
// already had another address loses the old PTR. name is a VM name (one
// DNS label, as model.ValidateVMName allows); it is matched
// case-insensitively. A nil or non-IPv4 ip removes the name instead.
func (s *Server) Set(name string, ip net.IP) {
	name = strings.ToLower(strings.TrimSuffix(name, "."+strings.TrimSuffix(Domain, ".")))
	ip4 := ip.To4()
	if ip4 == nil {
		s.Remove(name)
		return
	}
	ip4 = append(net.IP(nil), ip4...)
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.names[name]; ok && s.ptrs[old.String()] == name {
		delete(s.ptrs, old.String())
	}
	s.names[name] = ip4
	s.ptrs[ip4.String()] = name
}

// Remove withdraws the name and its PTR record. Unknown names are ignored.
func (s *Server) Remove(name string) {
	name = strings.ToLower(strings.TrimSuffix(name, "."+strings.TrimSuffix(Domain, ".")))
	s.mu.Lock()
	defer s.mu.Unlock()
	ip, ok := s.names[name]
	if !ok {
		return
	}
	delete(s.names, name)
	if s.ptrs[ip.String()] == name {
		delete(s.ptrs, ip.String())
	}
}

// Records returns a copy of the published names (without the `.vm`
// suffix) and their addresses, for reconcile and `banger doctor`.
func (s *Server) Records() map[string]net.IP {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string]net.IP, len(s.names))
	for n, ip := range s.names {
		out[n] = append(net.IP(nil), ip...)
	}
	return out
}

// Names returns the published names sorted, for stable listings.
func (s *Server) Names() []string {
	recs := s.Records()
	out := make([]string, 0, len(recs))
	for n := range recs {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (s *Server) serveDNS(w dns.ResponseWriter, req *dns.Msg) {
	who, recurse := s.classify(w.RemoteAddr())
	if who == fromStranger {
		s.refuse(w, req)
		return
	}
	if len(req.Question) != 1 || req.Opcode != dns.OpcodeQuery {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeNotImplemented)
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	qname := strings.ToLower(q.Name)
	var m *dns.Msg
	switch {
	case dns.IsSubDomain(Domain, qname):
		m = s.answerVM(req, qname, q.Qtype)
	case s.ownsReverse(qname):
		m = s.answerPTR(req, qname, q.Qtype)
	case !recurse:
		s.refuse(w, req)
		return
	default:
		m = s.forward(req, w.RemoteAddr().Network())
	}
	m.RecursionAvailable = recurse
	w.WriteMsg(m)
}

// refuse answers REFUSED: the question is not one this source may ask.
func (s *Server) refuse(w dns.ResponseWriter, req *dns.Msg) {
	s.refused.Add(1)
	m := new(dns.Msg)
	m.SetRcode(req, dns.RcodeRefused)
	w.WriteMsg(m)
}

func (s *Server) answerVM(req *dns.Msg, qname string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if qname == Domain {
		if qtype == dns.TypeSOA || qtype == dns.TypeANY {
			m.Answer = append(m.Answer, soa())
		} else {
			m.Ns = append(m.Ns, soa())
		}
		return m
	}
	label := strings.TrimSuffix(qname, "."+Domain)
	s.mu.RLock()
	ip, ok := s.names[label]
	s.mu.RUnlock()
	if !ok {
		m.Rcode = dns.RcodeNameError
		m.Ns = append(m.Ns, soa())
		return m
	}
	if qtype == dns.TypeA || qtype == dns.TypeANY {
		m.Answer = append(m.Answer, &dns.A{
			Hdr: dns.RR_Header{Name: qname, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: TTL},
			A:   ip,
		})
	} else {
		m.Ns = append(m.Ns, soa()) // NODATA: the name exists, not this type
	}
	return m
}

// ownsReverse reports whether qname is an in-addr.arpa name for one
// address inside Subnet.
func (s *Server) ownsReverse(qname string) bool {
	ip := reverseIP(qname)
	return ip != nil && s.Subnet != nil && s.Subnet.Contains(ip)
}

func (s *Server) answerPTR(req *dns.Msg, qname string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	ip := reverseIP(qname)
	s.mu.RLock()
	name, ok := s.ptrs[ip.String()]
	s.mu.RUnlock()
	if !ok {
		m.Rcode = dns.RcodeNameError
		return m
	}
	if qtype == dns.TypePTR || qtype == dns.TypeANY {
		m.Answer = append(m.Answer, &dns.PTR{
			Hdr: dns.RR_Header{Name: qname, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: TTL},
			Ptr: name + "." + Domain,
		})
	}
	return m
}

// reverseIP parses "5.0.30.172.in-addr.arpa." into 172.30.0.5; anything
// else (partial zones, IPv6) gives nil.
func reverseIP(qname string) net.IP {
	const suffix = ".in-addr.arpa."
	if !strings.HasSuffix(qname, suffix) {
		return nil
	}
	parts := strings.Split(strings.TrimSuffix(qname, suffix), ".")
	if len(parts) != 4 {
		return nil
	}
	for i, j := 0, 3; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return net.ParseIP(strings.Join(parts, ".")).To4()
}

func soa() dns.RR {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: Domain, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: TTL},
		Ns:      "ns." + Domain,
		Mbox:    "hostmaster." + Domain,
		Serial:  1,
		Refresh: 60,
		Retry:   60,
		Expire:  60,
		Minttl:  TTL,
	}
}

// forward relays req to the upstreams in order over the same transport it
// arrived on (a truncated UDP answer is passed on, so the client retries
// over TCP and so do we). SERVFAIL when none answers in time.
func (s *Server) forward(req *dns.Msg, network string) *dns.Msg {
	c := &dns.Client{Net: "udp", Timeout: ForwardTimeout}
	if network == "tcp" {
		c.Net = "tcp"
	}
	for i, up := range s.upstreams {
		if i == maxUpstreams {
			break
		}
		resp, _, err := c.Exchange(req, up)
		if err != nil || resp == nil {
			continue
		}
		if resp.Rcode == dns.RcodeServerFailure || resp.Rcode == dns.RcodeRefused {
			continue // another upstream may know better
		}
		resp.Id = req.Id
		return resp
	}
	m := new(dns.Msg)
	m.SetRcode(req, dns.RcodeServerFailure)
	m.RecursionAvailable = true
	return m
}
