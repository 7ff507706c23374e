package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"banger/internal/guestproto"
)

// A guest restored from a snapshot wakes up as its source: same memory, so
// the same hostname, address, MAC, host key, machine id and kernel random
// state. The daemon sends guestproto.IdentityRequest before the VM joins
// the bridge; applyIdentity makes it a VM of its own.

// identity answers IdentityRequest.
func (s *sshServer) identity(r *ssh.Request) {
	id, err := guestproto.DecodeIdentity(r.Payload)
	if err != nil || s.onIdentity == nil {
		if err != nil {
			s.logf("%s: %v", guestproto.IdentityRequest, err)
		}
		r.Reply(false, nil)
		return
	}
	key, err := s.onIdentity(id)
	if err != nil {
		s.logf("new identity: %v", err)
		r.Reply(false, nil)
		return
	}
	s.setHostKey(key)
	reply, err := guestproto.EncodeIdentityReply(guestproto.IdentityReply{HostKey: string(ssh.MarshalAuthorizedKey(key.PublicKey()))})
	if err != nil {
		r.Reply(false, nil)
		return
	}
	r.Reply(true, reply)
}

// applyIdentity applies id in the order guestproto.IdentityRequest states
// and returns the new host key. Entropy and the key are fatal to the
// request; the rest is too, except the clock (a guest with a wrong clock
// still works, and the daemon re-sets it every minute).
func applyIdentity(id guestproto.Identity) (ssh.Signer, error) {
	if err := addEntropy(id.Entropy); err != nil {
		return nil, fmt.Errorf("reseed the random generator: %w", err)
	}
	if _, err := setClock(id.Time); err != nil {
		logf("identity: clock: %v", err)
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	// No fsync per file: the Sync at the end makes the batch durable.
	if err := writeFileRenamed(machineIDPath, []byte(hex.EncodeToString(b[:])+"\n"), 0o444, false); err != nil {
		return nil, fmt.Errorf("machine id: %w", err)
	}
	key, err := newHostKey(guestproto.HostKeyPath)
	if err != nil {
		return nil, err
	}
	cfg := guestproto.Config{Hostname: id.Hostname, IP: id.IP, Gateway: id.Gateway, DNS: id.DNS}
	if err := setHostname(id.Hostname, cfg); err != nil {
		return nil, fmt.Errorf("hostname: %w", err)
	}
	if id.IP.IsValid() {
		if err := renumber(id); err != nil {
			return nil, fmt.Errorf("network: %w", err)
		}
	}
	if err := writeResolvConf(cfg); err != nil {
		return nil, fmt.Errorf("resolv.conf: %w", err)
	}
	unix.Sync() // the new key and machine id are on system.cow before we answer
	logf("new identity: %s %s %s", id.Hostname, id.IP, id.MAC)
	// A restored VM's console starts here: its boot, and the ready line a
	// cold boot prints, happened in the snapshot's source.
	logf("ready (restored from a snapshot)")
	return key, nil
}

// newHostKey replaces the host key file with a fresh ed25519 key (not
// fsynced: applyIdentity's Sync covers it).
func newHostKey(path string) (ssh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	blk, err := ssh.MarshalPrivateKey(priv, "banger-init host key")
	if err != nil {
		return nil, err
	}
	if err := writeFileRenamed(path, pem.EncodeToMemory(blk), 0o600, false); err != nil {
		return nil, fmt.Errorf("save host key: %w", err)
	}
	return ssh.NewSignerFromKey(priv)
}

// rndReseedCRNG is RNDRESEEDCRNG, _IO('R', 0x07): reseed the kernel's
// generator now from its input pool (Linux ≥ 4.17).
const rndReseedCRNG = 0x5207

// addEntropy mixes host randomness into the kernel's input pool and
// credits it (RNDADDENTROPY), then forces a reseed, so this guest's random
// numbers part from its source's at once rather than at the next periodic
// reseed.
func addEntropy(b []byte) error {
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
	buf := make([]byte, 8+len(b))
	binary.NativeEndian.PutUint32(buf[0:], uint32(len(b)*8))
	binary.NativeEndian.PutUint32(buf[4:], uint32(len(b)))
	copy(buf[8:], b)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDADDENTROPY, uintptr(unsafe.Pointer(&buf[0]))); e != 0 {
		return fmt.Errorf("RNDADDENTROPY: %w", e)
	}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), rndReseedCRNG, 0); e != 0 {
		return fmt.Errorf("RNDRESEEDCRNG: %w", e)
	}
	return nil
}

// renumber gives eth0 the new MAC and address: the old address goes, the
// default route and the neighbour cache (the source's peers) are rebuilt.
// virtio-net changes its MAC while up (IFF_LIVE_ADDR_CHANGE).
func renumber(id guestproto.Identity) error {
	eth, err := netlink.LinkByName("eth0")
	if err != nil {
		return err
	}
	if id.MAC != "" {
		hw, err := net.ParseMAC(id.MAC)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetHardwareAddr(eth, hw); err != nil {
			return fmt.Errorf("set MAC %s: %w", id.MAC, err)
		}
	}
	addrs, err := netlink.AddrList(eth, netlink.FAMILY_V4)
	if err != nil {
		return err
	}
	want := &netlink.Addr{IPNet: &net.IPNet{IP: id.IP.Addr().AsSlice(), Mask: net.CIDRMask(id.IP.Bits(), 32)}}
	for _, a := range addrs {
		if !a.IPNet.IP.Equal(want.IPNet.IP) {
			if err := netlink.AddrDel(eth, &a); err != nil {
				return fmt.Errorf("remove %s: %w", a.IPNet, err)
			}
		}
	}
	if err := netlink.AddrReplace(eth, want); err != nil {
		return fmt.Errorf("add %s: %w", id.IP, err)
	}
	if err := netlink.LinkSetUp(eth); err != nil {
		return err
	}
	if id.Gateway.IsValid() {
		if err := netlink.RouteReplace(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: id.Gateway.AsSlice()}); err != nil {
			return fmt.Errorf("default route via %s: %w", id.Gateway, err)
		}
	}
	if ns, err := netlink.NeighList(eth.Attrs().Index, netlink.FAMILY_V4); err == nil {
		for _, n := range ns {
			netlink.NeighDel(&n)
		}
	}
	return nil
}
