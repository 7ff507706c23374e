// Package hostnet is the host side of a VM's network: the bridge, one tap
// per VM, and the guest MAC and vsock CID derived from the guest IP. It
// talks netlink directly (no ip(8)), in the network namespace of the calling
// OS thread: the daemon's namespace, or a test's.
//
// The daemon calls nothing here until the first VM starts, so a daemon that
// only pulls images changes no interface on the host.
package hostnet

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Defaults. 172.30.0.0/24 sits in 172.16.0.0/12, far from the 172.17/16
// docker0 range and the 192.168/16 ranges home routers and libvirt use.
const (
	DefaultBridgeName = "banger0"
	DefaultBridgeCIDR = "172.30.0.1/24"
	// TapPrefix starts every tap name, so orphan cleanup (ListTaps) finds
	// only ours.
	TapPrefix = "bgr"
)

// EnsureBridge makes bridge name exist, carry address cidr (the gateway
// address with its prefix, e.g. "172.30.0.1/24") and be up. It is
// idempotent; another address already on the bridge is left alone.
func EnsureBridge(name, cidr string) error {
	if err := checkIfName(name); err != nil {
		return err
	}
	addr, err := netlink.ParseAddr(cidr)
	if err != nil || addr.IP.To4() == nil {
		return fmt.Errorf("bridge address %q: want an IPv4 address with prefix, like %s", cidr, DefaultBridgeCIDR)
	}
	link, err := netlink.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
		if err := netlink.LinkAdd(br); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("create bridge %s: %w", name, err)
		}
		if link, err = netlink.LinkByName(name); err != nil {
			return fmt.Errorf("bridge %s: %w", name, err)
		}
	case err != nil:
		return fmt.Errorf("bridge %s: %w", name, err)
	case link.Type() != "bridge":
		return fmt.Errorf("%s exists but is a %s, not a bridge: pick another bridge name", name, link.Type())
	}
	// AddrReplace is idempotent: no EEXIST when the address is there.
	if err := netlink.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("address %s on %s: %w", cidr, name, err)
	}
	// A fixed MAC: without one a bridge takes the lowest MAC of its ports,
	// so removing one VM's tap can change the gateway's MAC under every
	// other guest, whose ARP entry then points nowhere for tens of seconds.
	// MACFromIP of the bridge's own address is free: no guest gets it.
	mac, _ := net.ParseMAC(MACFromIP(addr.IP))
	if !bytes.Equal(link.Attrs().HardwareAddr, mac) {
		if err := netlink.LinkSetHardwareAddr(link, mac); err != nil {
			return fmt.Errorf("set MAC %s on %s: %w", mac, name, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring up %s: %w", name, err)
	}
	return nil
}

// CreateTap creates a persistent, single-queue tap called name, enslaved to
// bridge and up. An existing tap with that name is reused (re-enslaved and
// brought up), so a retried VM start is not an error. An empty bridge
// leaves the tap down and on no bridge (JoinBridge later): a guest
// restored from a snapshot speaks with its source's addresses until it
// has its own, and must not reach anyone meanwhile.
func CreateTap(name, bridge string) error {
	if err := checkIfName(name); err != nil {
		return err
	}
	var br netlink.Link
	if bridge != "" {
		var err error
		if br, err = netlink.LinkByName(bridge); err != nil {
			return fmt.Errorf("bridge %s for tap %s: %w (call EnsureBridge first)", bridge, name, err)
		}
	}
	link, err := netlink.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		// NO_PI|VNET_HDR without MULTI_QUEUE: what QEMU and Firecracker
		// ask for when they attach (a multi-queue mismatch is EINVAL).
		tap := &netlink.Tuntap{
			LinkAttrs: netlink.LinkAttrs{Name: name},
			Mode:      netlink.TUNTAP_MODE_TAP,
			Flags:     netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR,
		}
		err := netlink.LinkAdd(tap)
		for _, f := range tap.Fds {
			f.Close() // the tap persists; the VMM opens its own fd
		}
		if err != nil {
			return fmt.Errorf("create tap %s: %w", name, err)
		}
		if link, err = netlink.LinkByName(name); err != nil {
			return fmt.Errorf("tap %s: %w", name, err)
		}
	case err != nil:
		return fmt.Errorf("tap %s: %w", name, err)
	case link.Type() != "tuntap":
		return fmt.Errorf("%s exists but is a %s, not a tap", name, link.Type())
	}
	if br == nil {
		return nil
	}
	return joinBridge(link, br)
}

// JoinBridge enslaves an existing tap to bridge and brings it up.
func JoinBridge(name, bridge string) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("tap %s: %w", name, err)
	}
	br, err := netlink.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("bridge %s for tap %s: %w", bridge, name, err)
	}
	return joinBridge(link, br)
}

func joinBridge(link, br netlink.Link) error {
	name, bridge := link.Attrs().Name, br.Attrs().Name
	if err := netlink.LinkSetMaster(link, br); err != nil {
		return fmt.Errorf("attach tap %s to %s: %w", name, bridge, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring up tap %s: %w", name, err)
	}
	return nil
}

// DeleteTap removes tap name; a missing tap is not an error.
func DeleteTap(name string) error {
	link, err := netlink.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("tap %s: %w", name, err)
	}
	if link.Type() != "tuntap" {
		return fmt.Errorf("%s is a %s, not a tap: not deleting it", name, link.Type())
	}
	if err := netlink.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete tap %s: %w", name, err)
	}
	return nil
}

// ListTaps returns the names of the tap devices whose name starts with
// prefix (TapPrefix for banger's), for orphan cleanup.
func ListTaps(prefix string) ([]string, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var out []string
	for _, l := range links {
		if l.Type() == "tuntap" && strings.HasPrefix(l.Attrs().Name, prefix) {
			out = append(out, l.Attrs().Name)
		}
	}
	return out, nil
}

// TapName is the tap for VM vmID: "bgr" and the first 12 hex digits of the
// SHA-256 of the id (15 bytes, the kernel's IFNAMSIZ-1). Hashing keeps it
// stable, valid for any id, and unlikely to collide.
func TapName(vmID string) string {
	sum := sha256.Sum256([]byte(vmID))
	return TapPrefix + hex.EncodeToString(sum[:6])
}

// MACFromIP derives the guest's MAC from its IPv4 address: 02:42 then the
// four address bytes (02: locally administered, unicast). Distinct guest
// IPs give distinct MACs. A non-IPv4 address gives "".
func MACFromIP(ip net.IP) string {
	v4 := ip.To4()
	if v4 == nil {
		return ""
	}
	return fmt.Sprintf("02:42:%02x:%02x:%02x:%02x", v4[0], v4[1], v4[2], v4[3])
}

// DefaultVSockCID is the guest's vsock context id: 0x10000 + the last two
// bytes of its IPv4 address. That is >= 3 (0-2 are reserved), unique for
// every guest in any subnet up to /16, and stable across restarts. A
// non-IPv4 address gives 0 (invalid).
func DefaultVSockCID(ip net.IP) uint32 {
	v4 := ip.To4()
	if v4 == nil {
		return 0
	}
	return 0x10000 + uint32(v4[2])<<8 + uint32(v4[3])
}

func checkIfName(name string) error {
	if name == "" || len(name) > 15 || strings.ContainsAny(name, "/: \t\n") || name == "." || name == ".." {
		return fmt.Errorf("interface name %q: want 1 to 15 characters without '/', ':' or spaces", name)
	}
	return nil
}
