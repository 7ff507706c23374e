package daemon

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"banger/internal/api"
	"banger/internal/hostnet"
	"banger/internal/model"
	"banger/internal/nat"
	"banger/internal/portfwd"
	"banger/internal/vmdns"
)

// netState owns the host side of guest networking: the bridge, taps, NAT
// rules, vmdns records and port forwards. Nothing touches an interface
// until the first VM starts (ensure), so a daemon that only pulls images
// changes nothing on the host.
type netState struct {
	d *Daemon

	mu    sync.Mutex // guards ready, nat and dns
	ready bool
	nat   *nat.Manager
	dns   *vmdns.Server

	fwd *portfwd.Manager // safe for concurrent use on its own
}

func newNetState(d *Daemon) *netState {
	return &netState{d: d, fwd: portfwd.NewManager()}
}

func (n *netState) prefix() netip.Prefix { return n.d.cfg.BridgePrefix() }

func (n *netState) subnet() *net.IPNet {
	p := n.prefix()
	return &net.IPNet{IP: p.Masked().Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}
}

// ensure creates the bridge, the nftables table and the DNS server once.
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
	m := nat.New(cfg.BridgeName, n.subnet())
	if err := m.Ensure(); err != nil {
		return api.Errorf(api.KindUnavailable, "set up nftables table: %v", err)
	}
	n.nat = m
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

// attach makes the VM's tap on the bridge and reserves its port forwards,
// so a taken host port fails before the VM boots.
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
	tap := hostnet.TapName(rec.ID)
	bridge := n.d.cfg.BridgeName
	if isolated {
		bridge = ""
	}
	if err := hostnet.CreateTap(tap, bridge); err != nil {
		n.fwd.Release(rec.Name)
		return "", api.Errorf(api.KindUnavailable, "create tap %s: %v", tap, err)
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

// detach removes the tap and releases forwards. Safe to call twice.
func (n *netState) detach(rec model.VMRecord) error {
	n.fwd.Release(rec.Name)
	if err := hostnet.DeleteTap(hostnet.TapName(rec.ID)); err != nil {
		return fmt.Errorf("delete tap of %s: %w", rec.Name, err)
	}
	return nil
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

// reconcile removes taps and NAT members that belong to no running VM.
// It only reads the host unless leftovers exist.
func (n *netState) reconcile(ctx context.Context, running map[string]model.VMRecord) {
	keep := map[string]bool{}
	natKeep := map[string]bool{}
	for _, r := range running {
		keep[hostnet.TapName(r.ID)] = true
		if r.Spec.NAT {
			natKeep[r.Runtime.GuestIP] = true
		}
	}
	taps, err := hostnet.ListTaps(hostnet.TapPrefix)
	if err == nil {
		for _, t := range taps {
			if !keep[t] {
				n.d.log.Info("removing orphan tap", "tap", t)
				hostnet.DeleteTap(t)
			}
		}
	}
	m := nat.New(n.d.cfg.BridgeName, n.subnet())
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
