package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"banger/api"
	"banger/internal/antispoof"
	"banger/internal/hostnet"
	"banger/internal/model"
	"banger/internal/nat"
	"banger/internal/portfwd"
	"banger/internal/vmdns"
)

// netState owns the host side of guest networking: the bridge, taps, the
// anti-spoofing bridge filter, NAT rules, vmdns records and clients, and
// port forwards. Nothing touches an interface until the first VM starts
// (ensure), so a daemon that only pulls images changes nothing on the host.
//
// A VM's tap is locked to its MAC and address (antispoof) and the VM may
// ask vmdns (AllowClient) from attach to detach; its name, NAT and forwards
// are published from vmUp to vmDown.
type netState struct {
	d *Daemon

	mu    sync.Mutex // guards ready, nat and dns
	ready bool
	nat   *nat.Manager
	dns   *vmdns.Server

	fwd   *portfwd.Manager   // safe for concurrent use on its own
	guard *antispoof.Manager // likewise; its table is created by ensure
}

func newNetState(d *Daemon) *netState {
	return &netState{d: d, fwd: portfwd.NewManager(), guard: antispoof.New(d.names.TapPrefix).InTable(d.names.Table)}
}

// server is the running vmdns server, or nil.
func (n *netState) server() *vmdns.Server {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.dns
}

// portOf is what rec's tap may send as: the MAC and address the VM boots
// with (vmSpec derives the MAC from the address the same way).
func (n *netState) portOf(rec model.VMRecord) antispoof.Port {
	ip := net.ParseIP(rec.Runtime.GuestIP)
	mac, _ := net.ParseMAC(hostnet.MACFromIP(ip))
	return antispoof.Port{Tap: n.tapOf(rec), MAC: mac, IP: ip}
}

// tapOf is rec's tap: named per daemon instance (internal/instance).
func (n *netState) tapOf(rec model.VMRecord) string { return n.d.names.TapName(rec.ID) }

// natManager is this instance's NAT table for the bridge.
func (n *netState) natManager() *nat.Manager {
	return nat.New(n.d.cfg.BridgeName, n.subnet()).InTable(n.d.names.Table)
}

func (n *netState) prefix() netip.Prefix { return n.d.cfg.BridgePrefix() }

func (n *netState) subnet() *net.IPNet {
	p := n.prefix()
	return &net.IPNet{IP: p.Masked().Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}
}

// ensure creates the bridge, the nftables tables and the DNS server once.
func (n *netState) ensure() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ready {
		return nil
	}
	cfg := n.d.cfg
	if err := hostnet.EnsureBridge(cfg.BridgeName, cfg.BridgeIP); err != nil {
		return api.Errorf(api.KindUnavailable, "create bridge %s (%s): %v", cfg.BridgeName, cfg.BridgeIP, err)
	}
	if err := nat.EnableIPForwarding(); err != nil {
		n.d.log.Warn("enable IP forwarding", "err", err)
	}
	m := n.natManager()
	if err := m.Ensure(); err != nil {
		return api.Errorf(api.KindUnavailable, "set up nftables table: %v", err)
	}
	n.nat = m
	// Before any tap can exist in this daemon's life: the filter fails
	// closed, so an adopted VM's tap passes nothing until reconcile
	// re-adds its port (at once, if the table survived the last daemon).
	if err := n.guard.Ensure(); err != nil {
		return api.Errorf(api.KindUnavailable, "set up the bridge filter that stops guests spoofing each other: %v", err)
	}
	dns := vmdns.New(net.JoinHostPort(n.prefix().Addr().String(), "53"), vmdns.HostUpstreams())
	dns.Subnet = n.subnet()
	if err := dns.Start(); err != nil {
		n.d.log.Warn("vmdns not started: guests will not resolve <name>.vm", "err", err)
	} else {
		n.dns = dns
	}
	n.ready = true
	return nil
}

// attach makes the VM's tap on the bridge, locks it to the VM's MAC and
// address, lets the VM ask vmdns (recursion only with NAT), and reserves
// its port forwards, so a taken host port fails before the VM boots.
//
// isolated leaves the tap down and off the bridge (joinBridge later).
func (n *netState) attach(rec model.VMRecord, isolated bool) (string, error) {
	// Ports first: a clash must fail before anything is created.
	if len(rec.Spec.Ports) > 0 {
		if err := n.fwd.Reserve(rec.Name, forwardsOf(rec)); err != nil {
			return "", api.Errorf(api.KindConflict, "%v", err)
		}
	}
	if err := n.ensure(); err != nil {
		n.fwd.Release(rec.Name)
		return "", err
	}
	tap := n.tapOf(rec)
	bridge := n.d.cfg.BridgeName
	if isolated {
		bridge = ""
	}
	if err := hostnet.CreateTap(tap, bridge); err != nil {
		n.fwd.Release(rec.Name)
		return "", api.Errorf(api.KindUnavailable, "create tap %s: %v", tap, err)
	}
	if err := n.guard.AddPort(n.portOf(rec)); err != nil {
		hostnet.DeleteTap(tap)
		n.fwd.Release(rec.Name)
		return "", api.Errorf(api.KindUnavailable, "lock tap %s to the VM's addresses: %v", tap, err)
	}
	if dns := n.server(); dns != nil {
		dns.AllowClient(net.ParseIP(rec.Runtime.GuestIP), rec.Spec.NAT)
	}
	return tap, nil
}

// joinBridge puts an isolated tap (attach) on the bridge.
func (n *netState) joinBridge(tap string) error {
	if err := hostnet.JoinBridge(tap, n.d.cfg.BridgeName); err != nil {
		return api.Errorf(api.KindUnavailable, "%v", err)
	}
	return nil
}

// detach undoes attach: forwards, vmdns access, the tap and its filter
// entries (after the tap: a tap never outlives its entries). Safe to call
// twice.
func (n *netState) detach(rec model.VMRecord) error {
	n.fwd.Release(rec.Name)
	if dns := n.server(); dns != nil {
		dns.RemoveClient(net.ParseIP(rec.Runtime.GuestIP))
	}
	tap := n.tapOf(rec)
	var errs []error
	if err := hostnet.DeleteTap(tap); err != nil {
		errs = append(errs, fmt.Errorf("delete tap of %s: %w", rec.Name, err))
	}
	if err := n.guard.RemovePort(tap); err != nil {
		errs = append(errs, fmt.Errorf("remove filter entries of %s: %w", rec.Name, err))
	}
	return errors.Join(errs...)
}

func forwardsOf(rec model.VMRecord) []portfwd.Forward {
	out := make([]portfwd.Forward, 0, len(rec.Spec.Ports))
	for _, p := range rec.Spec.Ports {
		out = append(out, portfwd.Forward{HostIP: p.HostIP, HostPort: p.HostPort, GuestIP: rec.Runtime.GuestIP, GuestPort: p.GuestPort, Proto: p.Protocol})
	}
	return out
}

// vmUp publishes a ready VM: DNS record, NAT membership, live forwards.
func (n *netState) vmUp(ctx context.Context, rec model.VMRecord) error {
	ip := net.ParseIP(rec.Runtime.GuestIP)
	n.mu.Lock()
	dns, nm := n.dns, n.nat
	n.mu.Unlock()
	if dns != nil {
		dns.Set(rec.Name, ip)
	}
	if rec.Spec.NAT && nm != nil {
		if err := nm.AddGuest(ip); err != nil {
			return fmt.Errorf("enable NAT for %s: %w", rec.Name, err)
		}
	}
	if len(rec.Spec.Ports) > 0 {
		if err := n.fwd.Activate(rec.Name); err != nil {
			return fmt.Errorf("activate port forwards of %s: %w", rec.Name, err)
		}
	}
	return nil
}

// vmDown withdraws what vmUp published. Safe to call twice.
func (n *netState) vmDown(ctx context.Context, rec model.VMRecord) {
	n.mu.Lock()
	dns, nm := n.dns, n.nat
	n.mu.Unlock()
	if dns != nil {
		dns.Remove(rec.Name)
	}
	if nm != nil {
		nm.RemoveGuest(net.ParseIP(rec.Runtime.GuestIP))
	}
	n.fwd.Release(rec.Name)
}

// reconcile removes taps, filter entries and NAT members that belong to no
// running VM, and restores the filter entries and vmdns access of the
// running VMs that have a tap (attach did that for them in an earlier
// daemon). It only reads the host unless leftovers exist.
func (n *netState) reconcile(ctx context.Context, running map[string]model.VMRecord) {
	keep := map[string]bool{}
	natKeep := map[string]bool{}
	dns := n.server()
	for _, r := range running {
		keep[n.tapOf(r)] = true
		if r.Spec.NAT {
			natKeep[r.Runtime.GuestIP] = true
		}
		if r.Runtime.Tap == "" {
			continue
		}
		if err := n.guard.AddPort(n.portOf(r)); err != nil {
			n.d.log.Warn("restore filter entries of adopted VM", "vm", r.Name, "err", err)
		}
		if dns != nil {
			dns.AllowClient(net.ParseIP(r.Runtime.GuestIP), r.Spec.NAT)
		}
	}
	if ports, err := n.guard.Ports(); err == nil {
		for _, p := range ports {
			if !keep[p.Tap] {
				n.d.log.Info("removing stale filter entries", "tap", p.Tap, "ip", p.IP)
				n.guard.RemovePort(p.Tap)
			}
		}
	}
	// Only this instance's taps: another daemon's (another state dir,
	// maybe in this namespace) are not orphans of ours.
	taps, err := hostnet.ListTaps(n.d.names.TapPrefix)
	if err == nil {
		for _, t := range taps {
			if !keep[t] && n.d.names.OwnsTap(t) {
				n.d.log.Info("removing orphan tap", "tap", t)
				hostnet.DeleteTap(t)
			}
		}
	}
	m := n.natManager()
	if guests, err := m.Guests(); err == nil {
		for _, g := range guests {
			if !natKeep[g.String()] {
				n.d.log.Info("removing stale NAT member", "ip", g)
				m.RemoveGuest(g)
			}
		}
	}
}

// close stops the DNS server and forwards (VMs keep running).
func (n *netState) close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.dns != nil {
		n.dns.Close()
		n.dns = nil
	}
	for owner := range n.fwd.List() {
		n.fwd.Release(owner)
	}
}

// parsePorts validates -p specs into the model.
func parsePorts(specs []string) ([]model.PortForward, error) {
	var out []model.PortForward
	seen := map[string]bool{}
	for _, s := range specs {
		f, err := portfwd.ParseSpec(s)
		if err != nil {
			return nil, api.Errorf(api.KindInvalidArgument, "invalid port forward %q: %v", s, err)
		}
		key := f.HostAddr()
		if seen[key] {
			return nil, api.Errorf(api.KindInvalidArgument, "host port %s is given twice", key)
		}
		seen[key] = true
		out = append(out, model.PortForward{HostIP: f.HostIP, HostPort: f.HostPort, GuestPort: f.GuestPort, Protocol: f.Proto})
	}
	return out, nil
}

// resolvedSetup points systemd-resolved at vmdns for the .vm domain.
func (n *netState) resolvedSetup(teardown bool) (api.DNSResult, error) {
	cfg := n.d.cfg
	var err error
	if teardown {
		err = vmdns.TeardownResolved(cfg.BridgeName)
	} else {
		if err = n.ensure(); err == nil {
			err = vmdns.SetupResolved(cfg.BridgeName, n.prefix().Addr().String())
		}
	}
	if err != nil {
		return api.DNSResult{}, api.Errorf(api.KindUnavailable, "%v", err)
	}
	return api.DNSResult{Bridge: cfg.BridgeName, DNS: n.prefix().Addr().String(), Domain: "~vm"}, nil
}
