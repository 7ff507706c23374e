// Package vmdns is the daemon's DNS server for guests and, once
// systemd-resolved is pointed at it, for the host: it answers A records
// `<name>.vm.` and PTR records for running VMs, says NXDOMAIN for every
// other `.vm` name and every unknown address in the guest subnet, and
// forwards everything else to the host's resolvers.
//
// The server is authoritative for `vm.` and for the reverse zone of its
// subnet only; it never caches forwarded answers (the upstream does that).
package vmdns

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
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

	// srvMu guards udp, tcp and bound (lifecycle only, never taken by queries).
	srvMu sync.Mutex
	udp   *dns.Server
	tcp   *dns.Server
	bound string
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
	}
	if host, _, err := net.SplitHostPort(addr); err == nil {
		if ip := net.ParseIP(host).To4(); ip != nil {
			s.Subnet = &net.IPNet{IP: ip.Mask(net.CIDRMask(24, 32)), Mask: net.CIDRMask(24, 32)}
		}
	}
	return s
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
	udp := &dns.Server{PacketConn: pc, Handler: h}
	tcp := &dns.Server{Listener: ln, Handler: h, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}
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
	if len(req.Question) != 1 || req.Opcode != dns.OpcodeQuery {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeNotImplemented)
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	qname := strings.ToLower(q.Name)
	switch {
	case dns.IsSubDomain(Domain, qname):
		w.WriteMsg(s.answerVM(req, qname, q.Qtype))
	case s.ownsReverse(qname):
		w.WriteMsg(s.answerPTR(req, qname, q.Qtype))
	default:
		w.WriteMsg(s.forward(req, w.RemoteAddr().Network()))
	}
}

func (s *Server) answerVM(req *dns.Msg, qname string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	m.RecursionAvailable = true
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
	m.RecursionAvailable = true
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
