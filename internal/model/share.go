package model

import (
	"fmt"
	"path/filepath"
	"strings"

	"banger/internal/guestproto"
)

// MaxShares bounds a VM's host directory shares (-v).
const MaxShares = 8

// Share is one host directory a VM mounts (vm create -v HOST:GUEST[:ro]).
// HostPath is the directory as the daemon resolved it with the caller's
// rights (absolute, no symlinks); UID, GID and Groups are that caller's
// identity at create, the only rights the share is ever served with.
type Share struct {
	HostPath  string   `json:"host_path"`
	GuestPath string   `json:"guest_path"`
	ReadOnly  bool     `json:"read_only,omitempty"`
	UID       uint32   `json:"uid"`
	GID       uint32   `json:"gid"`
	Groups    []uint32 `json:"groups,omitempty"`
}

// Tag is the i-th share's mount tag (virtio-fs tag, 9p mount_tag).
func ShareTag(i int) string { return fmt.Sprintf("banger%d", i) }

// ParseShare reads HOSTDIR:GUESTDIR[:ro|:rw]. HOSTDIR must be absolute
// (the CLI makes a relative one absolute against its own working dir).
func ParseShare(s string) (Share, error) {
	f := strings.Split(s, ":")
	var sh Share
	switch {
	case len(f) == 2:
	case len(f) == 3 && (f[2] == "ro" || f[2] == "rw"):
		sh.ReadOnly = f[2] == "ro"
	default:
		return sh, fmt.Errorf("-v %q: want HOSTDIR:GUESTDIR or HOSTDIR:GUESTDIR:ro (a host path with ':' cannot be shared)", s)
	}
	sh.HostPath, sh.GuestPath = f[0], f[1]
	if !filepath.IsAbs(sh.HostPath) || strings.ContainsAny(sh.HostPath, "\n\x00") {
		return sh, fmt.Errorf("-v %q: host directory %q: want an absolute path", s, sh.HostPath)
	}
	sh.HostPath = filepath.Clean(sh.HostPath)
	if err := guestproto.CheckSharePath(sh.GuestPath); err != nil {
		return sh, fmt.Errorf("-v %q: %v", s, err)
	}
	return sh, nil
}

// CheckShares refuses more than MaxShares and two shares on one guest
// path or one inside another (the mount order would decide which wins).
func CheckShares(sh []Share) error {
	if len(sh) > MaxShares {
		return fmt.Errorf("%d shares (-v): at most %d per VM", len(sh), MaxShares)
	}
	for i, a := range sh {
		for _, b := range sh[i+1:] {
			if a.GuestPath == b.GuestPath || strings.HasPrefix(b.GuestPath, a.GuestPath+"/") || strings.HasPrefix(a.GuestPath, b.GuestPath+"/") {
				return fmt.Errorf("-v: guest paths %s and %s overlap: give each share its own directory", a.GuestPath, b.GuestPath)
			}
		}
	}
	return nil
}
