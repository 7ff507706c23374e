// Package instance names the host objects one banger daemon owns, so two
// daemons on two state dirs (in one network namespace, sharing one
// runtime dir one after the other) never see each other's objects as
// orphans: tap names, the nftables tables (inet NAT, bridge antispoof) and
// the runtime directory whose path marks its VMM processes.
//
// The names derive from the state dir: the default state dir keeps the
// names banger always used (an upgraded daemon adopts its running VMs'
// taps and tables as they are); any other state dir gets a 4-hex-digit
// tag from the SHA-256 of its absolute path.
package instance

import (
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
)

// DefaultStateDir is the state dir whose instance has no tag.
const DefaultStateDir = "/var/lib/banger"

// Names are one daemon instance's host object names.
type Names struct {
	// Tag is "" for the default state dir, else 4 hex digits.
	Tag string
	// TapPrefix starts every tap of this instance: "bgr" (default) or
	// "bg"+Tag. A tag is hex, so no tagged prefix starts with "bgr" and
	// no instance's prefix is another's (every tagged one is 6 bytes).
	TapPrefix string
	// Table is the nftables table name in both families banger uses
	// (inet for NAT, bridge for antispoof): "banger" or "banger-"+Tag.
	Table string
	// VMRunDir is the directory under the runtime dir that holds the VMs'
	// sockets, "vms" or "vms-"+Tag. Every VMM process of this instance
	// has a path under it on its command line: that is how orphan
	// cleanup tells its VMMs from another instance's.
	VMRunDir string
}

// For returns the names of the daemon whose state dir is stateDir (made
// absolute and clean first, so equal dirs give equal names).
func For(stateDir string) Names {
	if abs, err := filepath.Abs(stateDir); err == nil {
		stateDir = abs
	}
	stateDir = filepath.Clean(stateDir)
	if stateDir == DefaultStateDir {
		return Names{TapPrefix: "bgr", Table: "banger", VMRunDir: "vms"}
	}
	sum := sha256.Sum256([]byte(stateDir))
	tag := hex.EncodeToString(sum[:2])
	return Names{Tag: tag, TapPrefix: "bg" + tag, Table: "banger-" + tag, VMRunDir: "vms-" + tag}
}

// TapName is the tap of VM vmID: TapPrefix and as many hex digits of the
// SHA-256 of the id as fit in 15 bytes (the kernel's IFNAMSIZ-1): 12 for
// the default instance, 9 for a tagged one. Hashing keeps it stable and
// valid for any id.
func (n Names) TapName(vmID string) string {
	sum := sha256.Sum256([]byte(vmID))
	h := hex.EncodeToString(sum[:])
	return n.TapPrefix + h[:15-len(n.TapPrefix)]
}

// OwnsTap says whether tap is one of this instance's: its prefix and
// then only hex digits, to the full length (so "bgr…" of the default
// instance is not "bg" + a tag, and no other instance's name matches).
func (n Names) OwnsTap(tap string) bool {
	if len(tap) != 15 || tap[:len(n.TapPrefix)] != n.TapPrefix {
		return false
	}
	for _, c := range tap[len(n.TapPrefix):] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
