// Package nat owns banger's nftables table: masquerade for the guests that
// asked for NAT, and a forward filter that keeps every other guest on the
// bridge (it reaches the host and the other guests, nothing beyond).
//
// Everything lives in one table, `inet banger`, so banger never edits a
// chain it does not own and Teardown is a single table delete. `inet`
// rather than `ip`: one table sees both IPv4 and IPv6, so the "nothing
// beyond the bridge" drop also stops a guest's IPv6 traffic (the guests
// have no IPv6 NAT). It needs nftables NAT in the inet family (Linux 5.2+).
//
//	table inet banger {
//		set nat_guests {
//			type ipv4_addr
//		}
//		chain forward {
//			type filter hook forward priority filter; policy accept;
//			oifname "BR" ct state established,related accept
//			iifname "BR" oifname "BR" accept
//			iifname "BR" ip saddr @nat_guests accept
//			iifname "BR" counter drop
//			oifname "BR" counter drop
//		}
//		chain postrouting {
//			type nat hook postrouting priority srcnat; policy accept;
//			ip saddr @nat_guests oifname != "BR" counter masquerade
//		}
//	}
//
// Membership is decided by source address, which is only sound because
// package antispoof drops, on the bridge port, every packet a guest sends
// from an address that is not its own (before it, a guest without NAT that
// took a NAT guest's address reached the uplink).
//
// Per-VM NAT is one element of the nat_guests set: AddGuest and RemoveGuest
// are atomic set-element operations, with no rule handles to track, and
// Guests lists the set for reconcile.
//
// The forward chain's policy is accept so traffic that is not banger's is
// left to the host's own rules. Note that nftables runs every base chain on
// a hook: a host whose own forward chain drops by default (iptables FORWARD
// policy DROP, as Docker sets) also drops NAT guests' traffic; banger does
// not edit other tables, so such hosts need an accept for the bridge there.
//
// IP forwarding is a per-network-namespace sysctl: EnableIPForwarding turns
// it on for the namespace the daemon runs in (the host's, in production),
// and nothing turns it off again, since other software on the host may
// rely on it. With it on, the host routes for any interface; this table
// only governs traffic to and from the bridge.
package nat

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"banger/internal/nftx"
)

// Names of the objects banger owns.
const (
	TableName       = "banger"
	SetName         = "nat_guests"
	ForwardChain    = "forward"
	PostroutingName = "postrouting"
)

// Manager programs the banger table for one bridge and guest subnet.
type Manager struct {
	bridge    string
	subnet    *net.IPNet
	tableName string // TableName unless InTable named another

	// nsFd, when non-zero, is a network namespace fd every netlink socket
	// is opened in (tests pin it to their namespace); zero means the
	// calling thread's namespace.
	nsFd int

	// mu serialises batches, so a Teardown cannot interleave with an
	// Ensure and leave half a table.
	mu sync.Mutex
}

// New returns a Manager for the bridge named bridge whose guests live in
// subnet. Nothing is touched until Ensure.
func New(bridge string, subnet *net.IPNet) *Manager {
	return &Manager{bridge: bridge, subnet: subnet, tableName: TableName}
}

// InTable makes m program the inet table called name instead of
// TableName: each daemon instance owns its own table (see
// internal/instance), so one never edits another's NAT members.
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
		return nil, fmt.Errorf("nat: open nftables netlink socket: %w", err)
	}
	return c, nil
}

func (m *Manager) table() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: m.tableName}
}

func (m *Manager) set(t *nftables.Table) *nftables.Set {
	return &nftables.Set{Table: t, Name: SetName, KeyType: nftables.TypeIPAddr}
}

// Ensure creates the table, the set and both chains if missing, and
// rewrites the chains' rules, in one atomic batch. Set elements (the
// guests with NAT) survive, so it is safe to call on every daemon start.
func (m *Manager) Ensure() error {
	if len(m.bridge) == 0 || len(m.bridge) >= unix.IFNAMSIZ {
		return fmt.Errorf("nat: bridge name %q is not a valid interface name", m.bridge)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.conn()
	if err != nil {
		return err
	}
	t := c.AddTable(m.table())
	set := m.set(t)
	if err := c.AddSet(set, nil); err != nil {
		return fmt.Errorf("nat: add set %s: %w", SetName, err)
	}
	fwd := c.AddChain(&nftables.Chain{
		Name: ForwardChain, Table: t,
		Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookForward,
		Priority: nftables.ChainPriorityFilter, Policy: policy(nftables.ChainPolicyAccept),
	})
	post := c.AddChain(&nftables.Chain{
		Name: PostroutingName, Table: t,
		Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookPostrouting,
		Priority: nftables.ChainPriorityNATSource,
	})
	c.FlushChain(fwd)
	c.FlushChain(post)

	br := ifname(m.bridge)
	rules := [][]expr.Any{
		// Replies to guests (their own connections out, NAT or not).
		cat(meta(expr.MetaKeyOIFNAME), eq(br), ctEstablished(), verdict(expr.VerdictAccept)),
		// Guest to guest across the bridge (bridged traffic meets this hook
		// only where br_netfilter is loaded).
		cat(meta(expr.MetaKeyIIFNAME), eq(br), meta(expr.MetaKeyOIFNAME), eq(br), verdict(expr.VerdictAccept)),
		// Guests with NAT leave the bridge.
		cat(meta(expr.MetaKeyIIFNAME), eq(br), ipv4(), saddrIn(set), verdict(expr.VerdictAccept)),
		// Everyone else stays: the host (input, not this hook) and peers only.
		cat(meta(expr.MetaKeyIIFNAME), eq(br), counter(), verdict(expr.VerdictDrop)),
		// Nothing beyond the host opens connections to guests.
		cat(meta(expr.MetaKeyOIFNAME), eq(br), counter(), verdict(expr.VerdictDrop)),
	}
	for _, r := range rules {
		c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: r})
	}
	c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: cat(
		ipv4(), saddrIn(set), meta(expr.MetaKeyOIFNAME), neq(br), counter(), masquerade(),
	)})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nat: create table inet %s: %w (needs root and nftables support in the kernel: nf_tables, nft_masq)", m.tableName, err)
	}
	return nil
}

// AddGuest gives ip NAT: it is added to the nat_guests set. Adding an
// address that is already there is not an error.
func (m *Manager) AddGuest(ip net.IP) error {
	key, err := m.guestKey(ip)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.conn()
	if err != nil {
		return err
	}
	if err := c.SetAddElements(m.set(m.table()), []nftables.SetElement{{Key: key}}); err != nil {
		return fmt.Errorf("nat: add %s: %w", ip, err)
	}
	if err := c.Flush(); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("nat: add %s: set inet %s %s does not exist (call Ensure first): %w", ip, m.tableName, SetName, err)
		}
		return fmt.Errorf("nat: add %s: %w", ip, err)
	}
	return nil
}

// RemoveGuest withdraws NAT from ip. An address (or a table) that is not
// there is not an error: stop and reconcile call this unconditionally.
func (m *Manager) RemoveGuest(ip net.IP) error {
	key, err := m.guestKey(ip)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.conn()
	if err != nil {
		return err
	}
	if err := c.SetDeleteElements(m.set(m.table()), []nftables.SetElement{{Key: key}}); err != nil {
		return fmt.Errorf("nat: remove %s: %w", ip, err)
	}
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("nat: remove %s: %w", ip, err)
	}
	return nil
}

// Guests lists the addresses that have NAT, sorted. No table means none.
func (m *Manager) Guests() ([]net.IP, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.conn()
	if err != nil {
		return nil, err
	}
	// The library flattens the netlink error of a missing set into text,
	// so look for the table first rather than matching ENOENT.
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("nat: list nftables tables: %w", err)
	}
	found := false
	for _, t := range tables {
		found = found || t.Name == m.tableName
	}
	if !found {
		return nil, nil
	}
	elems, err := c.GetSetElements(m.set(m.table()))
	if err != nil {
		return nil, fmt.Errorf("nat: list set inet %s %s: %w", m.tableName, SetName, err)
	}
	out := make([]net.IP, 0, len(elems))
	for _, e := range elems {
		if len(e.Key) == net.IPv4len {
			out = append(out, net.IPv4(e.Key[0], e.Key[1], e.Key[2], e.Key[3]).To4())
		}
	}
	sort.Slice(out, func(i, j int) bool { return string(out[i]) < string(out[j]) })
	return out, nil
}

// Teardown deletes the whole banger table (chains, rules, set). A missing
// table is not an error.
func (m *Manager) Teardown() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.conn()
	if err != nil {
		return err
	}
	c.DelTable(m.table())
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("nat: delete table inet %s: %w", m.tableName, err)
	}
	return nil
}

// guestKey validates ip (IPv4, inside the subnet) and returns the set key.
func (m *Manager) guestKey(ip net.IP) ([]byte, error) {
	ip4 := ip.To4()
	if ip4 == nil {
		return nil, fmt.Errorf("nat: guest address %v is not IPv4", ip)
	}
	if m.subnet != nil && !m.subnet.Contains(ip4) {
		return nil, fmt.Errorf("nat: guest address %s is outside the guest subnet %s", ip4, m.subnet)
	}
	return []byte(ip4), nil
}

// EnableIPForwarding sets net.ipv4.ip_forward=1 in the calling thread's
// network namespace (see the package comment for why it is never undone).
func EnableIPForwarding() error {
	const p = "/proc/sys/net/ipv4/ip_forward"
	if b, err := os.ReadFile(p); err == nil && len(b) > 0 && b[0] == '1' {
		return nil
	}
	if err := os.WriteFile(p, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("nat: enable IP forwarding (%s): %w (needs root)", p, err)
	}
	return nil
}

// Expression helpers: each returns a fragment, cat joins them into a
// rule. Register 1 is the only one the rules need.

func meta(k expr.MetaKey) []expr.Any { return []expr.Any{&expr.Meta{Key: k, Register: 1}} }

func neq(b []byte) []expr.Any {
	return []expr.Any{&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: b}}
}

func counter() []expr.Any { return []expr.Any{&expr.Counter{}} }

func verdict(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }

func masquerade() []expr.Any { return []expr.Any{&expr.Masq{}} }

// ipv4 matches IPv4 packets only; in an inet table an `ip saddr` load on an
// IPv6 packet would read the wrong header bytes.
func ipv4() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
	}
}

func saddrIn(set *nftables.Set) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
	}
}

func ctEstablished() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{
			SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  binaryutil.NativeEndian.PutUint32(0),
		},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
	}
}

// Probe lists the kernel's inet tables over netlink without changing
// anything: it fails where nf_tables is missing or the caller lacks
// CAP_NET_ADMIN, exactly as Ensure would.
func Probe() error {
	return nftx.Probe(nftables.TableFamilyINet)
}

// Shared with the other banger table (internal/nftx).
var (
	cat    = nftx.Cat
	policy = nftx.Policy
	eq     = nftx.Eq
	ifname = nftx.IfName
)
