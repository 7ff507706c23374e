// Package antispoof locks every VM's tap to the VM's own MAC and IPv4
// address, so a guest cannot pose as another guest (or as the host) on the
// bridge: not to the host, not to its peers, and not through NAT.
//
// Without it a guest without NAT that took a NAT guest's address reached the
// uplink: the `inet banger` forward filter (package nat) decides by source
// address, and the bridge forwards whatever a tap sends. The same hole let a
// guest answer ARP for a peer's address and take its traffic, and would let
// it pose as a known guest to vmdns. The check belongs on the bridge port,
// the one place that knows which VM a frame came from.
//
// Everything lives in one table, `bridge banger` (the bridge family sees
// frames as they enter the bridge from a port, before any forwarding or
// routing), so Teardown is a single table delete and banger never edits a
// chain it does not own:
//
//	table bridge banger {
//		counter drop_mac {}   counter drop_ip {}   counter drop_arp {}
//		counter drop_ipv6 {}  counter drop_other {}
//		set guest_macs  { type ifname . ether_addr }              # tap . MAC
//		set guest_addrs { type ifname . ether_addr . ipv4_addr }  # tap . MAC . IP
//		set dns_meter   { type ifname; size 4096; flags dynamic,timeout; timeout 1m }
//		chain prerouting {
//			type filter hook prerouting priority -200; policy accept;
//			iifname "bgr*" jump guard
//		}
//		chain guard {
//			iifname . ether saddr != @guest_macs counter name "drop_mac" drop
//			ether type ip iifname . ether saddr . ip saddr != @guest_addrs counter name "drop_ip" drop
//			udp dport 53 update @dns_meter { iifname limit rate over 200/second burst 400 packets } counter name "drop_dns" drop
//			tcp dport 53 update @dns_meter { iifname limit rate over 200/second burst 400 packets } counter name "drop_dns" drop
//			ether type ip accept
//			arp htype 1 arp ptype ip arp hlen 6 arp plen 4 iifname . arp saddr ether . arp saddr ip @guest_addrs accept
//			ether type arp counter name "drop_arp" drop
//			ether type ip6 counter name "drop_ipv6" drop
//			counter name "drop_other" drop
//		}
//	}
//
// A VM's port is two set elements (AddPort adds them, RemovePort deletes
// them, each in one atomic batch), so there are no rule handles to track
// and Ports lists the sets for reconcile.
//
// It fails closed: every bridge port whose name has banger's tap prefix
// (hostnet.TapPrefix, which only banger's taps carry) is guarded, so a tap whose elements are not there yet (or any
// more) passes nothing. What a guest may send: IPv4 from its own MAC and
// address, and Ethernet/IPv4 ARP whose sender is its own MAC and address
// (an RFC 5227 probe, sender 0.0.0.0, is dropped: to the prober that reads
// as "address free", which it is). Everything else is dropped: IPv6 (guests
// have none configured; this also stops router advertisements and neighbour
// spoofing), VLAN-tagged frames (nft sees the 802.1Q ethertype even when the
// kernel has moved the tag out of the frame), and every other ethertype.
// Each kind of drop has a named counter (Counters; `nft list counters
// table bridge banger`).
//
// DNS a port sends (to vmdns or anywhere) is also rate limited, per port,
// in the kernel: see DNSRate.
//
// Frames from the host to guests are not filtered: the host is trusted.
package antispoof

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"sort"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"banger/internal/nftx"
)

// Names of the objects banger owns.
const (
	TableName      = "banger"
	MACSetName     = "guest_macs"
	AddrSetName    = "guest_addrs"
	DNSMeterName   = "dns_meter"
	PreroutingName = "prerouting"
	GuardChain     = "guard"
)

// Counter names: one per kind of drop.
const (
	CounterMAC   = "drop_mac"   // source MAC is not the port's VM's
	CounterIP    = "drop_ip"    // IPv4 source address is not the VM's
	CounterARP   = "drop_arp"   // ARP sender is not the VM's, or not Ethernet/IPv4 ARP
	CounterDNS   = "drop_dns"   // DNS packets over a port's rate (DNSRate)
	CounterIPv6  = "drop_ipv6"  // any IPv6
	CounterOther = "drop_other" // any other ethertype (VLAN tags included)
)

// CounterNames lists the counter names in rule order.
var CounterNames = []string{CounterMAC, CounterIP, CounterDNS, CounterARP, CounterIPv6, CounterOther}

// DNSRate and DNSBurst bound the packets to port 53 (UDP or TCP, any
// destination) one port may send: twice vmdns's own per-guest limit (a
// TCP query takes several packets). vmdns's limiter still has to read
// every datagram it drops, and a guest sending faster than the daemon
// reads would fill the socket's buffer and crowd out every other guest's
// queries; this drop happens in the kernel, per port, before either.
const (
	DNSRate  = 200
	DNSBurst = 400
)

// Port is one VM's bridge port: its tap and the only MAC and IPv4 address
// frames entering from it may carry as source.
type Port struct {
	Tap string
	MAC net.HardwareAddr
	IP  net.IP
}

func (p Port) String() string { return fmt.Sprintf("%s (%s %s)", p.Tap, p.MAC, p.IP) }

// Manager programs the bridge banger table.
type Manager struct {
	tapPrefix string
	tableName string // TableName unless InTable named another

	// nsFd, when non-zero, is a network namespace fd every netlink socket
	// is opened in (tests pin it to their namespace); zero means the
	// calling thread's namespace.
	nsFd int

	// mu serialises batches, and makes RemovePort's list-then-delete and
	// AddPort's replace one step against each other.
	mu sync.Mutex
}

// New returns a Manager that guards the bridge ports whose names start
// with tapPrefix (hostnet.TapPrefix in the daemon). Nothing is touched
// until Ensure.
//
// Ports are matched by name alone, on any bridge: matching the bridge too
// (meta ibrname) needs nft_meta_bridge, which not every kernel has (this
// project's test machines lack it), and the prefix is banger's already
// (orphan-tap cleanup deletes whatever carries it).
func New(tapPrefix string) *Manager {
	return &Manager{tapPrefix: tapPrefix, tableName: TableName}
}

// InTable makes m program the bridge table called name instead of
// TableName: each daemon instance owns its own table (see
// internal/instance), so one never edits another's ports.
func (m *Manager) InTable(name string) *Manager {
	m.tableName = name
	return m
}

func (m *Manager) conn() (*nftables.Conn, error) {
	var opts []nftables.ConnOption
	if m.nsFd != 0 {
		opts = append(opts, nftables.WithNetNSFd(m.nsFd))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("antispoof: open nftables netlink socket: %w", err)
	}
	return c, nil
}

func (m *Manager) table() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyBridge, Name: m.tableName}
}

var (
	macKeyType  = nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeEtherAddr)
	addrKeyType = nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeEtherAddr, nftables.TypeIPAddr)
)

func macSet(t *nftables.Table) *nftables.Set {
	return &nftables.Set{Table: t, Name: MACSetName, KeyType: macKeyType, Concatenation: true}
}

func addrSet(t *nftables.Table) *nftables.Set {
	return &nftables.Set{Table: t, Name: AddrSetName, KeyType: addrKeyType, Concatenation: true}
}

// Ensure creates the table, its sets, counters and chains if missing, and
// rewrites the chains' rules, in one atomic batch. Set elements (the
// ports) and counter values survive, so it is safe on every daemon start.
func (m *Manager) Ensure() error {
	if m.tapPrefix == "" || len(m.tapPrefix) >= unix.IFNAMSIZ {
		return fmt.Errorf("antispoof: tap prefix %q: want 1 to 15 characters", m.tapPrefix)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.conn()
	if err != nil {
		return err
	}
	t := c.AddTable(m.table())
	macs, addrs := macSet(t), addrSet(t)
	if err := c.AddSet(macs, nil); err != nil {
		return fmt.Errorf("antispoof: add set %s: %w", MACSetName, err)
	}
	if err := c.AddSet(addrs, nil); err != nil {
		return fmt.Errorf("antispoof: add set %s: %w", AddrSetName, err)
	}
	meter := &nftables.Set{Table: t, Name: DNSMeterName, KeyType: nftables.TypeIFName,
		Dynamic: true, HasTimeout: true, Timeout: time.Minute, Size: 4096}
	if err := c.AddSet(meter, nil); err != nil {
		return fmt.Errorf("antispoof: add set %s: %w", DNSMeterName, err)
	}
	for _, name := range CounterNames {
		c.AddObj(&nftables.CounterObj{Table: t, Name: name})
	}
	pre := c.AddChain(&nftables.Chain{
		Name: PreroutingName, Table: t,
		Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookPrerouting,
		Priority: nftables.ChainPriorityRef(-200), // the bridge family's "filter"
		Policy:   policy(nftables.ChainPolicyAccept),
	})
	guard := c.AddChain(&nftables.Chain{Name: GuardChain, Table: t})
	c.FlushChain(pre)
	c.FlushChain(guard)

	// Only banger's taps: a port a user added to the bridge under another
	// name is left alone.
	c.AddRule(&nftables.Rule{Table: t, Chain: pre, Exprs: cat(
		meta(expr.MetaKeyIIFNAME), eq([]byte(m.tapPrefix)),
		[]expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: GuardChain}},
	)})

	rules := [][]expr.Any{
		cat(meta(expr.MetaKeyIIFNAME), etherSaddr(), notIn(macs), drop(CounterMAC)),
		cat(etherType(unix.ETH_P_IP), meta(expr.MetaKeyIIFNAME), etherSaddr(), ipSaddr(), notIn(addrs), drop(CounterIP)),
		cat(l4(unix.IPPROTO_UDP), dport(53), meta(expr.MetaKeyIIFNAME), overRate(meter), drop(CounterDNS)),
		cat(l4(unix.IPPROTO_TCP), dport(53), meta(expr.MetaKeyIIFNAME), overRate(meter), drop(CounterDNS)),
		cat(etherType(unix.ETH_P_IP), accept()),
		// The sender fields sit at these offsets only in Ethernet/IPv4 ARP
		// (htype 1, ptype 0x0800, hlen 6, plen 4), the only ARP the
		// kernel parses on an Ethernet device, so the header is checked
		// in the same rule. Written as an accept (rather than "!= drop")
		// so that nft lists it as what it is: a 6-byte inequality reads
		// back as four field inequalities, a weaker rule.
		cat(etherType(unix.ETH_P_ARP), payload(expr.PayloadBaseNetworkHeader, 0, 6, 1),
			eq([]byte{0x00, 0x01, 0x08, 0x00, 0x06, 0x04}),
			meta(expr.MetaKeyIIFNAME), arpSender(), in(addrs), accept()),
		cat(etherType(unix.ETH_P_ARP), drop(CounterARP)),
		cat(etherType(unix.ETH_P_IPV6), drop(CounterIPv6)),
		drop(CounterOther),
	}
	for _, r := range rules {
		c.AddRule(&nftables.Rule{Table: t, Chain: guard, Exprs: r})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("antispoof: create table bridge %s: %w (needs root and nftables bridge-family support in the kernel: nf_tables, CONFIG_NF_TABLES_BRIDGE)", m.tableName, err)
	}
	return nil
}

// AddPort lets p.Tap's VM send from p.MAC and p.IP. It replaces whatever
// the tap was allowed before, in one batch, so a port is never half
// updated and adding the same port twice is not an error.
func (m *Manager) AddPort(p Port) error {
	mk, ak, err := keys(p)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.conn()
	if err != nil {
		return err
	}
	t := m.table()
	oldMACs, oldAddrs, err := m.elementsLocked(c)
	if errors.Is(err, errNoTable) {
		return fmt.Errorf("antispoof: add %s: table bridge %s does not exist (call Ensure first)", p, m.tableName)
	}
	if err != nil {
		return err
	}
	delM, delA := stale(oldMACs, p.Tap, mk), stale(oldAddrs, p.Tap, ak)
	if len(delM) > 0 {
		if err := c.SetDeleteElements(macSet(t), delM); err != nil {
			return fmt.Errorf("antispoof: add %s: %w", p, err)
		}
	}
	if len(delA) > 0 {
		if err := c.SetDeleteElements(addrSet(t), delA); err != nil {
			return fmt.Errorf("antispoof: add %s: %w", p, err)
		}
	}
	if err := c.SetAddElements(macSet(t), []nftables.SetElement{{Key: mk}}); err != nil {
		return fmt.Errorf("antispoof: add %s: %w", p, err)
	}
	if err := c.SetAddElements(addrSet(t), []nftables.SetElement{{Key: ak}}); err != nil {
		return fmt.Errorf("antispoof: add %s: %w", p, err)
	}
	if err := c.Flush(); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("antispoof: add %s: table bridge %s does not exist (call Ensure first): %w", p, m.tableName, err)
		}
		return fmt.Errorf("antispoof: add %s: %w", p, err)
	}
	return nil
}

// RemovePort withdraws everything tap was allowed, so from then on the
// tap passes nothing. A tap (or a table) that is not there is not an
// error: stop and reconcile call this unconditionally.
func (m *Manager) RemovePort(tap string) error {
	if err := checkIfName(tap); err != nil {
		return fmt.Errorf("antispoof: tap: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.conn()
	if err != nil {
		return err
	}
	macs, addrs, err := m.elementsLocked(c)
	if errors.Is(err, errNoTable) {
		return nil
	}
	if err != nil {
		return err
	}
	delM, delA := stale(macs, tap, nil), stale(addrs, tap, nil)
	if len(delM)+len(delA) == 0 {
		return nil
	}
	t := m.table()
	if len(delM) > 0 {
		if err := c.SetDeleteElements(macSet(t), delM); err != nil {
			return fmt.Errorf("antispoof: remove %s: %w", tap, err)
		}
	}
	if len(delA) > 0 {
		if err := c.SetDeleteElements(addrSet(t), delA); err != nil {
			return fmt.Errorf("antispoof: remove %s: %w", tap, err)
		}
	}
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("antispoof: remove %s: %w", tap, err)
	}
	return nil
}

// Ports lists the allowed ports (from the address set), sorted by tap. No
// table means none.
func (m *Manager) Ports() ([]Port, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.conn()
	if err != nil {
		return nil, err
	}
	_, addrs, err := m.elementsLocked(c)
	if errors.Is(err, errNoTable) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Port
	for _, e := range addrs {
		if p, ok := parseAddrKey(e.Key); ok {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Tap < out[j].Tap })
	return out, nil
}

// Counters returns the packets each drop counter has counted, by name. No
// table means an empty map.
func (m *Manager) Counters() (map[string]uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.conn()
	if err != nil {
		return nil, err
	}
	out := map[string]uint64{}
	if ok, err := m.haveTable(c); err != nil || !ok {
		return out, err
	}
	objs, err := c.GetNamedObjects(m.table())
	if err != nil {
		return nil, fmt.Errorf("antispoof: list counters: %w", err)
	}
	for _, o := range objs {
		if n, ok := o.(*nftables.NamedObj); ok {
			if ctr, ok := n.Obj.(*expr.Counter); ok {
				out[n.Name] = ctr.Packets
			}
		}
	}
	return out, nil
}

// Teardown deletes the whole table (chains, rules, sets, counters). A
// missing table is not an error.
func (m *Manager) Teardown() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.conn()
	if err != nil {
		return err
	}
	c.DelTable(m.table())
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("antispoof: delete table bridge %s: %w", m.tableName, err)
	}
	return nil
}

var errNoTable = errors.New("no table")

// haveTable looks for the table first: the library flattens the netlink
// error of a missing set into text, so ENOENT cannot be matched later.
func (m *Manager) haveTable(c *nftables.Conn) (bool, error) {
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyBridge)
	if err != nil {
		return false, fmt.Errorf("antispoof: list nftables tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == m.tableName {
			return true, nil
		}
	}
	return false, nil
}

// elementsLocked lists both sets; errNoTable when the table is missing.
//
// caller holds m.mu
func (m *Manager) elementsLocked(c *nftables.Conn) (macs, addrs []nftables.SetElement, err error) {
	ok, err := m.haveTable(c)
	if err != nil {
		return nil, nil, err
	}
	if !ok {
		return nil, nil, errNoTable
	}
	t := m.table()
	if macs, err = c.GetSetElements(macSet(t)); err != nil {
		return nil, nil, fmt.Errorf("antispoof: list set bridge %s %s: %w", m.tableName, MACSetName, err)
	}
	if addrs, err = c.GetSetElements(addrSet(t)); err != nil {
		return nil, nil, fmt.Errorf("antispoof: list set bridge %s %s: %w", m.tableName, AddrSetName, err)
	}
	return macs, addrs, nil
}

// stale returns the elements of tap other than keep.
func stale(elems []nftables.SetElement, tap string, keep []byte) []nftables.SetElement {
	name := ifname(tap)
	var out []nftables.SetElement
	for _, e := range elems {
		if len(e.Key) >= unix.IFNAMSIZ && bytes.Equal(e.Key[:unix.IFNAMSIZ], name) && !bytes.Equal(e.Key, keep) {
			out = append(out, nftables.SetElement{Key: e.Key})
		}
	}
	return out
}

// keys validates p and returns its two set keys. Concatenated keys pad
// every field to a multiple of 4 bytes: ifname 16, MAC 6+2, IPv4 4.
func keys(p Port) (macKey, addrKey []byte, err error) {
	if err := checkIfName(p.Tap); err != nil {
		return nil, nil, fmt.Errorf("antispoof: tap: %w", err)
	}
	if len(p.MAC) != 6 {
		return nil, nil, fmt.Errorf("antispoof: %s: MAC %q is not a 6-byte Ethernet address", p.Tap, p.MAC)
	}
	if p.MAC[0]&1 != 0 {
		return nil, nil, fmt.Errorf("antispoof: %s: MAC %s is a multicast address", p.Tap, p.MAC)
	}
	ip := p.IP.To4()
	if ip == nil || ip.IsUnspecified() {
		return nil, nil, fmt.Errorf("antispoof: %s: guest address %v is not a usable IPv4 address", p.Tap, p.IP)
	}
	macKey = append(ifname(p.Tap), p.MAC...)
	macKey = append(macKey, 0, 0)
	addrKey = append(append([]byte(nil), macKey...), ip...)
	return macKey, addrKey, nil
}

func parseAddrKey(k []byte) (Port, bool) {
	if len(k) != unix.IFNAMSIZ+8+4 {
		return Port{}, false
	}
	name := string(bytes.TrimRight(k[:unix.IFNAMSIZ], "\x00"))
	mac := append(net.HardwareAddr(nil), k[unix.IFNAMSIZ:unix.IFNAMSIZ+6]...)
	ip := append(net.IP(nil), k[unix.IFNAMSIZ+8:]...)
	return Port{Tap: name, MAC: mac, IP: ip}, true
}

func checkIfName(name string) error {
	if name == "" || len(name) >= unix.IFNAMSIZ {
		return fmt.Errorf("interface name %q: want 1 to 15 characters", name)
	}
	return nil
}

// Probe lists the kernel's bridge-family tables over netlink without
// changing anything: it fails where nf_tables is missing or the caller
// lacks CAP_NET_ADMIN.
func Probe() error {
	return nftx.Probe(nftables.TableFamilyBridge)
}

// Expression helpers: each returns a fragment, cat joins them into a rule.
// Registers follow what nft(8) emits for the same rules: a concatenation
// starts in the 16-byte register 1 (ifname), the MAC goes to register 2
// (32-bit registers 12-13, the last 2 bytes zeroed by the load) and the
// IPv4 address to 32-bit register 14.

const (
	regIfname = 1  // NFT_REG_1
	regMAC    = 2  // NFT_REG_2
	regIPv4   = 14 // NFT_REG32_06
)

func meta(k expr.MetaKey) []expr.Any {
	return []expr.Any{&expr.Meta{Key: k, Register: regIfname}}
}

func payload(base expr.PayloadBase, off, n, reg uint32) []expr.Any {
	return []expr.Any{&expr.Payload{DestRegister: reg, Base: base, Offset: off, Len: n}}
}

func etherType(t uint16) []expr.Any {
	return cat(payload(expr.PayloadBaseLLHeader, 12, 2, 1), eq([]byte{byte(t >> 8), byte(t)}))
}

func etherSaddr() []expr.Any { return payload(expr.PayloadBaseLLHeader, 6, 6, regMAC) }

func ipSaddr() []expr.Any { return payload(expr.PayloadBaseNetworkHeader, 12, 4, regIPv4) }

// arpSender loads the ARP sender hardware and protocol addresses (after
// htype, ptype, hlen, plen, op: 8 bytes) in the concatenation's layout.
func arpSender() []expr.Any {
	return cat(payload(expr.PayloadBaseNetworkHeader, 8, 6, regMAC), payload(expr.PayloadBaseNetworkHeader, 14, 4, regIPv4))
}

func in(set *nftables.Set) []expr.Any {
	return []expr.Any{&expr.Lookup{SourceRegister: regIfname, SetName: set.Name, SetID: set.ID}}
}

// l4 matches the transport protocol (IPv4 only reaches these rules).
func l4(proto byte) []expr.Any {
	return cat(meta(expr.MetaKeyL4PROTO), eq([]byte{proto}))
}

func dport(p uint16) []expr.Any {
	return cat(payload(expr.PayloadBaseTransportHeader, 2, 2, 1), eq([]byte{byte(p >> 8), byte(p)}))
}

// overRate updates the port's entry in meter (key: register 1, the
// ifname) and matches when the port is over DNSRate.
func overRate(meter *nftables.Set) []expr.Any {
	return []expr.Any{&expr.Dynset{
		SrcRegKey: regIfname, SetName: meter.Name, SetID: meter.ID,
		Operation: unix.NFT_DYNSET_OP_UPDATE,
		Exprs: []expr.Any{&expr.Limit{
			Type: expr.LimitTypePkts, Rate: DNSRate, Unit: expr.LimitTimeSecond, Burst: DNSBurst, Over: true,
		}},
	}}
}

func notIn(set *nftables.Set) []expr.Any {
	return []expr.Any{&expr.Lookup{SourceRegister: regIfname, SetName: set.Name, SetID: set.ID, Invert: true}}
}

func drop(counter string) []expr.Any {
	return []expr.Any{
		&expr.Objref{Type: int(nftables.ObjTypeCounter), Name: counter},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
}

func accept() []expr.Any { return []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}} }

// Shared with the other banger table (internal/nftx).
var (
	cat    = nftx.Cat
	policy = nftx.Policy
	eq     = nftx.Eq
	ifname = nftx.IfName
)
