package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"banger/api"
	"banger/internal/asuser"
)

// Host paths in a request (kernel import, image import) are read with the
// caller's rights: root's as they are; anyone else's are staged first
// (internal/asuser: opened as the caller, copied into a private temp dir,
// files and directories only, capped), and the import reads the copies.
// So a member of the banger group imports only what they could read.

// importLimits cap what a non-root caller may stage for one import.
var importLimits = asuser.Limits{MaxBytes: 32 << 30, MaxEntries: 1_000_000}

// stagePaths returns paths (absolute host paths; "" entries stay "") as
// the import may read them, and a cleanup to call when it is done.
func (d *Daemon) stagePaths(ctx context.Context, paths ...string) ([]string, func(), error) {
	c := callerOf(ctx)
	if c.root() {
		return paths, func() {}, nil
	}
	tmp := filepath.Join(d.cfg.StateDir, "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return nil, nil, err
	}
	dir, err := os.MkdirTemp(tmp, "stage-")
	if err != nil {
		return nil, nil, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	creds := asuser.CredsOf(c.UID, c.GID, c.PID)
	out := make([]string, len(paths))
	for i, p := range paths {
		if p == "" {
			continue
		}
		out[i] = filepath.Join(dir, fmt.Sprintf("%d-%s", i, filepath.Base(p)))
		if err := asuser.Stage(creds, p, out[i], importLimits); err != nil {
			cleanup()
			kind := api.KindInvalidArgument
			if errors.Is(err, asuser.ErrNotAllowed) {
				kind = api.KindPermissionDenied
			}
			return nil, nil, api.Errorf(kind, "%w", err)
		}
	}
	return out, cleanup, nil
}
