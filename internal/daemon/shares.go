package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"banger/api"
	"banger/internal/asuser"
	"banger/internal/model"
	"banger/internal/vmm"
)

// Host directory shares (-v): the daemon resolves each HOSTDIR with the
// caller's rights at create (asuser.CheckDir: a user shares only what they
// may read, and write unless :ro), records the resolved path and the
// caller's identity in the VM's spec, and hands both to the driver at every
// start, which serves the directory with that identity only (see
// internal/vmm/virtiofs for the sandbox).

// parseShares reads the -v values of a create.
func parseShares(vals []string) ([]model.Share, error) {
	var out []model.Share
	for _, v := range vals {
		sh, err := model.ParseShare(v)
		if err != nil {
			return nil, api.Errorf(api.KindInvalidArgument, "%v", err)
		}
		out = append(out, sh)
	}
	if err := model.CheckShares(out); err != nil {
		return nil, api.Errorf(api.KindInvalidArgument, "%v", err)
	}
	return out, nil
}

// resolveSharesFor checks each share as the caller of ctx and fills in
// the resolved host path and the identity to serve it with.
func resolveSharesFor(ctx context.Context, shares []model.Share) error {
	if len(shares) == 0 {
		return nil
	}
	c := callerOf(ctx)
	creds := asuser.Creds{}
	if !c.root() {
		creds = asuser.CredsOf(c.UID, c.GID, c.PID)
	}
	for i := range shares {
		sh := &shares[i]
		sh.UID, sh.GID, sh.Groups = creds.UID, creds.GID, creds.Groups
		if err := resolveShare(sh); err != nil {
			return err
		}
		sh.GID = serveGID(sh.HostPath, creds)
	}
	return nil
}

// serveGID is the group a share is served with: virtiofsd drops every
// supplementary group at start (QEMU 7.0 on, CVE-2022-0358), so a
// directory the caller reaches through one of their other groups (a team
// directory, group-writable) is served with that group as the primary
// one; otherwise the caller's own.
func serveGID(dir string, c asuser.Creds) uint32 {
	fi, err := os.Stat(dir)
	if err != nil {
		return c.GID
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Gid == c.GID || st.Uid == c.UID {
		return c.GID
	}
	for _, g := range c.Groups {
		if g == st.Gid {
			return g
		}
	}
	return c.GID
}

// resolveShare checks sh.HostPath with the identity recorded in sh and
// replaces it with the directory it resolves to.
func resolveShare(sh *model.Share) error {
	creds := asuser.Creds{UID: sh.UID, GID: sh.GID, Groups: sh.Groups}
	real, err := asuser.CheckDir(creds, sh.HostPath, !sh.ReadOnly)
	if err != nil {
		kind := api.KindInvalidArgument
		if errors.Is(err, asuser.ErrNotAllowed) {
			kind = api.KindPermissionDenied
		}
		hint := ""
		if !sh.ReadOnly && strings.Contains(err.Error(), "write") {
			hint = " (share it read-only with :ro)"
		}
		return api.Errorf(kind, "-v %s:%s: %v%s", sh.HostPath, sh.GuestPath, err, hint)
	}
	if strings.ContainsAny(real, ",:\n") {
		return api.Errorf(api.KindInvalidArgument, "-v %s:%s: the directory resolves to %q, and a shared path cannot hold ',' ':' or a newline", sh.HostPath, sh.GuestPath, real)
	}
	sh.HostPath = real
	return nil
}

func (r *startRun) noShares() bool { return len(r.rec.Spec.Shares) == 0 }

func (r *startRun) sharesMsg() string {
	return fmt.Sprintf("%d over %s", len(r.rec.Spec.Shares), r.caps.ShareTransport)
}

// checkShares re-checks every share with its owner's recorded identity
// (the directory may have gone, or its permissions changed, since the
// create) and records the transport this start serves them over.
func (r *startRun) checkShares(ctx context.Context) error {
	for i := range r.rec.Spec.Shares {
		sh := r.rec.Spec.Shares[i] // a copy: the recorded path stays as resolved at create
		if err := resolveShare(&sh); err != nil {
			return err
		}
	}
	if r.caps.ShareTransport == vmm.Share9p && r.km.ModulesTree != "" && !kernelHas(r.km.Path(r.s.d.kernels.dir, r.km.ModulesTree), "9pnet_virtio") {
		// Debian's cloud kernel is built without 9p (measured): a boot
		// would only end in a guest without its shares.
		return api.Errorf(api.KindUnavailable, "-v: this daemon serves shares over 9p (no virtiofsd found, or --share-transport 9p), and kernel %q has no 9p support: install virtiofsd (Debian: qemu-system-common) or use a kernel with CONFIG_NET_9P_VIRTIO", r.km.Name)
	}
	r.rec.Runtime.ShareTransport = r.caps.ShareTransport
	return nil
}

// kernelHas reports whether a module tree (modules.order, modules.builtin)
// lists module mod, as a module or built in.
func kernelHas(tree, mod string) bool {
	for _, f := range []string{"modules.order", "modules.builtin"} {
		b, err := os.ReadFile(filepath.Join(tree, f))
		if err == nil && strings.Contains(string(b), "/"+mod+".ko") {
			return true
		}
	}
	return false
}
