package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"banger/internal/model"
)

// manifestName is the VM's own record of itself, written beside its disks
// at create and each stop, so a state dir whose banger.db is lost can be
// re-imported (`banger daemon --adopt`) instead of only set aside.
const manifestName = "vm.json"

// manifestMax bounds what adoption reads: a record is a few KiB.
const manifestMax = 1 << 20

// writeManifest records rec in its VM dir (0600, via a rename so a crash
// leaves the old one or the new one). Only what a stopped VM needs: the
// running VMM's state is not kept.
func writeManifest(rec model.VMRecord) error {
	if rec.Runtime.Dir == "" {
		return nil
	}
	m := rec
	m.State = model.StateStopped
	m.Runtime = model.VMRuntime{GuestIP: rec.Runtime.GuestIP, Dir: rec.Runtime.Dir,
		ProvisionState: rec.Runtime.ProvisionState, ProvisionedAt: rec.Runtime.ProvisionedAt}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(rec.Runtime.Dir, "."+manifestName+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(rec.Runtime.Dir, manifestName))
}

// saveManifest is writeManifest with the failure logged: the manifest is
// a second copy, never a reason to fail the operation that changed the VM.
func (d *Daemon) saveManifest(rec model.VMRecord) {
	if err := writeManifest(rec); err != nil {
		d.log.Warn("write VM manifest (needed only by --adopt)", "vm", rec.Name, "err", err)
	}
}

// readManifest reads and checks dir's manifest: the id is the directory's
// name, the name and address valid, the address in the bridge's prefix.
func (d *Daemon) readManifest(dir string) (model.VMRecord, error) {
	f, err := os.Open(filepath.Join(dir, manifestName))
	if err != nil {
		return model.VMRecord{}, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, manifestMax+1))
	if err != nil {
		return model.VMRecord{}, err
	}
	if len(b) > manifestMax {
		return model.VMRecord{}, fmt.Errorf("%s is over %d bytes", manifestName, manifestMax)
	}
	var rec model.VMRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return model.VMRecord{}, fmt.Errorf("%s: %w", manifestName, err)
	}
	if rec.ID != filepath.Base(dir) {
		return model.VMRecord{}, fmt.Errorf("%s names VM id %q, not its directory's", manifestName, rec.ID)
	}
	if err := model.ValidateVMName(rec.Name); err != nil {
		return model.VMRecord{}, err
	}
	ip, err := netip.ParseAddr(rec.Runtime.GuestIP)
	if err != nil || !d.cfg.BridgePrefix().Masked().Contains(ip) {
		return model.VMRecord{}, fmt.Errorf("guest address %q is not in the bridge's prefix %s", rec.Runtime.GuestIP, d.cfg.BridgePrefix().Masked())
	}
	rec.State = model.StateStopped
	rec.Runtime = model.VMRuntime{GuestIP: rec.Runtime.GuestIP, Dir: dir,
		ProvisionState: rec.Runtime.ProvisionState, ProvisionedAt: rec.Runtime.ProvisionedAt}
	return rec, nil
}

// vmDirsNoRowClaims lists the VM directories (by id) that no row of the
// store claims and that carry a manifest.
func (d *Daemon) vmDirsNoRowClaims(ctx context.Context) ([]string, error) {
	recs, err := d.store.ListVMs(ctx)
	if err != nil {
		return nil, err
	}
	rows := map[string]bool{}
	for _, r := range recs {
		rows[r.ID] = true
	}
	entries, _ := os.ReadDir(filepath.Join(d.cfg.StateDir, "vms"))
	var out []string
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") || rows[e.Name()] {
			continue
		}
		if _, err := os.Stat(filepath.Join(d.cfg.StateDir, "vms", e.Name(), manifestName)); err == nil {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// freshStoreBesideVMs refuses a store that has no VM at all while VM
// directories with a manifest exist (a banger.db recreated after it was
// lost): reconcile would set every one aside. With --adopt they are
// re-imported, with --reset set aside on purpose.
func (d *Daemon) freshStoreBesideVMs(ctx context.Context) error {
	if d.cfg.Adopt || d.cfg.Reset {
		return nil
	}
	recs, err := d.store.ListVMs(ctx)
	if err != nil || len(recs) > 0 {
		return err
	}
	dirs, err := d.vmDirsNoRowClaims(ctx)
	if err != nil || len(dirs) == 0 {
		return err
	}
	return fmt.Errorf("state dir %s has %d VM directories (%s) but its banger.db records no VM (lost and recreated?): refusing to start so no work disk is touched; "+
		"restore banger.db, or start once with --adopt to re-import them as stopped VMs, or with --reset to move them to %s",
		d.cfg.StateDir, len(dirs), filepath.Join(d.cfg.StateDir, "vms"), filepath.Join(d.cfg.StateDir, lostFoundDir))
}

// adoptVMDirs (--adopt) inserts a stopped VM for each directory no row
// claims whose manifest reads and checks out and whose name and address
// are free. The others stay for reconcile, which moves them to
// lost+found. Their disks are not touched either way.
func (d *Daemon) adoptVMDirs(ctx context.Context) error {
	if !d.cfg.Adopt {
		return nil
	}
	ids, err := d.vmDirsNoRowClaims(ctx)
	if err != nil {
		return err
	}
	for _, id := range ids {
		dir := filepath.Join(d.cfg.StateDir, "vms", id)
		rec, err := d.readManifest(dir)
		if err == nil {
			err = d.store.InsertVM(ctx, rec)
		}
		if err != nil {
			d.log.Warn("VM directory not adopted (it goes to lost+found)", "dir", dir, "err", err)
			continue
		}
		d.log.Info("adopted VM directory as a stopped VM", "vm", rec.Name, "dir", dir, "image", rec.Spec.Image)
	}
	return nil
}
