package guestproto

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
)

// IdentityRequest is an SSH global request the daemon sends to a guest
// restored from a snapshot, right after it answers: the restored memory is
// the source VM's, so without it two VMs would share a hostname, an
// address, a MAC, an SSH host key, a machine id and the kernel's random
// state. Its payload is JSON Identity (≤ MaxIdentityBytes); banger-init
// applies every field before it replies true with IdentityReply (the new
// host key), or replies false and logs why.
//
// The order in the guest: entropy first (RNDADDENTROPY, then
// RNDRESEEDCRNG, so every random number after it, the new keys included,
// comes from a reseeded generator), then the clock, machine id, host key,
// hostname, network (MAC, address, route, neighbours flushed) and
// resolv.conf.
const IdentityRequest = "banger-identity@banger"

// MaxIdentityBytes bounds an IdentityRequest payload.
const MaxIdentityBytes = 16 << 10

// Entropy bounds: what the host pushes into the guest's pool.
const (
	MinIdentityEntropy = 32
	MaxIdentityEntropy = 512
)

// Identity is what makes a restored guest a VM of its own.
type Identity struct {
	Hostname string `json:"hostname"`
	// IP (with prefix), Gateway and DNS as on the command line (Config);
	// IP invalid: the guest has no network.
	IP      netip.Prefix `json:"ip,omitempty"`
	Gateway netip.Addr   `json:"gateway,omitempty"`
	DNS     []netip.Addr `json:"dns,omitempty"`
	// MAC is eth0's new address. The NIC's MAC is device state that the
	// restore brought back from the source; the guest sets it itself.
	MAC string `json:"mac,omitempty"`
	// Time is the host's clock when it sent the request.
	Time time.Time `json:"time"`
	// Entropy is host randomness for the guest's pool (RNDADDENTROPY).
	Entropy []byte `json:"entropy"`
}

// IdentityReply is banger-init's answer.
type IdentityReply struct {
	// HostKey is the new SSH host public key, authorized_keys format.
	HostKey string `json:"host_key"`
}

// Validate checks an Identity (both sides call it).
func (id *Identity) Validate() error {
	if !hostnameRE.MatchString(id.Hostname) {
		return fmt.Errorf("identity: hostname %q: want a DNS label", id.Hostname)
	}
	if id.IP.IsValid() && !id.IP.Addr().Is4() {
		return fmt.Errorf("identity: address %s: want IPv4", id.IP)
	}
	if id.Gateway.IsValid() && (!id.IP.IsValid() || !id.Gateway.Is4()) {
		return fmt.Errorf("identity: gateway %s without an IPv4 address", id.Gateway)
	}
	if len(id.DNS) > 8 {
		return fmt.Errorf("identity: %d DNS servers, at most 8", len(id.DNS))
	}
	if id.MAC != "" {
		hw, err := net.ParseMAC(id.MAC)
		if err != nil || len(hw) != 6 || hw[0]&1 != 0 {
			return fmt.Errorf("identity: MAC %q: want a unicast 6-byte MAC", id.MAC)
		}
	}
	if err := checkClock(id.Time); err != nil {
		return fmt.Errorf("identity: time: %w", err)
	}
	if n := len(id.Entropy); n < MinIdentityEntropy || n > MaxIdentityEntropy {
		return fmt.Errorf("identity: %d bytes of entropy, want %d to %d", n, MinIdentityEntropy, MaxIdentityEntropy)
	}
	return nil
}

// DecodeIdentity parses and validates an IdentityRequest payload.
func DecodeIdentity(b []byte) (Identity, error) {
	var id Identity
	if len(b) > MaxIdentityBytes {
		return id, fmt.Errorf("identity request of %d bytes: at most %d", len(b), MaxIdentityBytes)
	}
	if err := json.Unmarshal(b, &id); err != nil {
		return id, fmt.Errorf("identity request: %w", err)
	}
	return id, id.Validate()
}

// EncodeIdentityReply is the guest's reply payload.
func EncodeIdentityReply(r IdentityReply) ([]byte, error) { return json.Marshal(r) }

// DecodeIdentityReply is the host's bounded parse of an IdentityReply.
func DecodeIdentityReply(b []byte) (IdentityReply, error) {
	var r IdentityReply
	if len(b) > MaxReplyBytes {
		return r, fmt.Errorf("identity reply of %d bytes: at most %d", len(b), MaxReplyBytes)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("identity reply: %w", err)
	}
	if !strings.HasPrefix(r.HostKey, "ssh-") {
		return r, fmt.Errorf("identity reply: host key %q", truncate(r.HostKey))
	}
	return r, nil
}
