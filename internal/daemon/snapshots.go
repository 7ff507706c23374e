package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"banger/api"
	"banger/internal/disk"
	"banger/internal/model"
)

// Snapshots. A snapshot is a directory, state/snapshots/<id>:
//
//	manifest.json  model.Snapshot
//	state.bin      the VMM's memory and device state (Snapshotter.SaveState)
//	system.cow     the overlay and
//	root.ext4      the work disk, copied while the VM was paused
//	known_hosts    the source's host key: a restored guest presents it
//	               until the identity step gives it its own
//
// It is written under state/snapshots/.tmp-<id> and renamed into place
// (publication, under snapMu), so a listing never sees half a snapshot
// and a daemon killed mid-way leaves only a .tmp- directory, which the
// next daemon removes before it serves. The source VM is paused from the
// first byte of state to the last disk copy: the disks must be the ones
// the saved memory knows (its page cache, its open files).

// Files in a snapshot's directory.
const (
	snapManifest  = "manifest.json"
	snapStateName = "state.bin"
	snapTmpPrefix = ".tmp-"
)

func (s *VMService) snapshotsDir() string { return filepath.Join(s.d.cfg.StateDir, "snapshots") }

// validateSnapshotName: snapshot names follow VM names' rule (DNS label).
func validateSnapshotName(n string) error {
	if err := model.ValidateVMName(n); err != nil {
		return api.Errorf(api.KindInvalidArgument, "%s", strings.Replace(err.Error(), "VM name", "snapshot name", 1))
	}
	return nil
}

// readSnapshot reads one published snapshot's manifest.
func readSnapshot(dir string) (model.Snapshot, error) {
	f, err := os.Open(filepath.Join(dir, snapManifest))
	if err != nil {
		return model.Snapshot{}, err
	}
	defer f.Close()
	var sn model.Snapshot
	if err := json.NewDecoder(io.LimitReader(f, 1<<20)).Decode(&sn); err != nil {
		return sn, fmt.Errorf("snapshot %s: %w", dir, err)
	}
	if sn.ID != filepath.Base(dir) {
		return sn, fmt.Errorf("snapshot %s: manifest names id %q", dir, sn.ID)
	}
	sn.Dir = dir
	return sn, nil
}

// listSnapshots returns the caller's published snapshots, oldest first.
func (s *VMService) listSnapshots(ctx context.Context) ([]model.Snapshot, error) {
	ents, err := os.ReadDir(s.snapshotsDir())
	if errors.Is(err, os.ErrNotExist) {
		return []model.Snapshot{}, nil
	}
	if err != nil {
		return nil, err
	}
	out := []model.Snapshot{}
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		sn, err := readSnapshot(filepath.Join(s.snapshotsDir(), e.Name()))
		if err != nil {
			s.d.log.Warn("unreadable snapshot", "dir", e.Name(), "err", err)
			continue
		}
		if ownsUID(ctx, sn.Spec.OwnerUID) {
			out = append(out, sn)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, nil
}

// findSnapshot resolves a snapshot by exact name, then id.
func (s *VMService) findSnapshot(ctx context.Context, ref string) (model.Snapshot, error) {
	if ref == "" {
		return model.Snapshot{}, api.Errorf(api.KindInvalidArgument, "missing snapshot name")
	}
	all, err := s.listSnapshots(ctx)
	if err != nil {
		return model.Snapshot{}, err
	}
	for _, sn := range all {
		if sn.Name == ref {
			return sn, nil
		}
	}
	for _, sn := range all {
		if sn.ID == ref {
			return sn, nil
		}
	}
	return model.Snapshot{}, api.Errorf(api.KindNotFound, "snapshot %q not found: `banger snapshot ls` lists them", ref)
}

// SnapshotVM saves a running (or paused) VM as a published snapshot.
func (s *VMService) SnapshotVM(ctx context.Context, p api.VMSnapshotParams) (model.Snapshot, error) {
	var out model.Snapshot
	_, err := s.withVM(ctx, p.Name, func(rec model.VMRecord) (model.VMRecord, error) {
		op := s.d.beginOperation(ctx, "vm.snapshot", "vm_id", rec.ID, "vm", rec.Name, "snapshot", p.Snapshot)
		name := p.Snapshot
		if name == "" {
			name = generatedSnapshotName(rec.Name)
		}
		if err := validateSnapshotName(name); err != nil {
			return rec, op.fail(err)
		}
		// Checked before the VM pauses, and again at publication.
		if _, err := s.findSnapshotByName(name); err == nil {
			return rec, op.fail(api.Errorf(api.KindAlreadyExists, "snapshot %q already exists: pick another --name or `banger snapshot rm %s`", name, name))
		}
		sn, tmp, err := s.saveSnapshotLocked(ctx, op, rec, name)
		if err != nil {
			return rec, op.fail(err)
		}
		op.stage("publish", name)
		if sn, err = s.publishSnapshot(sn, tmp); err != nil {
			os.RemoveAll(tmp)
			return rec, op.fail(err)
		}
		out = sn
		op.done()
		return rec, nil
	})
	return out, err
}

func generatedSnapshotName(vm string) string {
	if len(vm) > 40 {
		vm = strings.TrimRight(vm[:40], "-")
	}
	return vm + "-" + time.Now().UTC().Format("20060102-150405")
}

// findSnapshotByName looks for any owner's snapshot of that name (names
// are unique in a state dir, like VM names).
func (s *VMService) findSnapshotByName(name string) (model.Snapshot, error) {
	all, err := s.listSnapshots(asRoot(context.Background()))
	if err != nil {
		return model.Snapshot{}, err
	}
	for _, sn := range all {
		if sn.Name == name {
			return sn, nil
		}
	}
	return model.Snapshot{}, os.ErrNotExist
}

// saveSnapshotLocked writes a snapshot of rec into a new temp directory
// under snapshots/ and returns it with that directory; on error nothing is
// left. The VM is paused from the state's first byte to the last disk
// copy, then resumed (unless it was paused before) and its clock set.
//
// caller holds s.vmLocks[rec.ID].
func (s *VMService) saveSnapshotLocked(ctx context.Context, op *operation, rec model.VMRecord, name string) (sn model.Snapshot, dir string, err error) {
	lv := s.getLive(rec.ID)
	wasPaused := rec.State == model.StatePaused
	if !wasPaused {
		if err := notRunningErr(rec, lv); err != nil {
			return sn, "", err
		}
	} else if lv == nil {
		return sn, "", api.Errorf(api.KindConflict, "VM %q has no running VMM", rec.Name)
	}
	return s.saveSnapshotIn(ctx, op, rec, lv, wasPaused, s.snapshotsDir(), model.NewID(), name)
}

// saveSnapshotIn writes a snapshot of rec (live as lv) into
// parent/.tmp-<id>, which it returns; on error nothing is left.
//
// caller holds s.vmLocks[rec.ID].
func (s *VMService) saveSnapshotIn(ctx context.Context, op *operation, rec model.VMRecord, lv *liveVM, wasPaused bool, parent, id, name string) (sn model.Snapshot, dir string, err error) {
	snap, err := s.snapshotter(lv)
	if err != nil {
		return sn, "", err
	}
	if len(rec.Spec.Shares) > 0 {
		// virtio-fs keeps the guest's open files in virtiofsd, 9p in
		// QEMU's fid table: neither is in a saved state (QEMU refuses to
		// migrate them), so a restore would find them gone.
		return sn, "", api.Errorf(api.KindUnavailable, "VM %q has host directory shares (-v %s:%s): their state lives on the host, outside what a snapshot saves, so it cannot be snapshotted or forked; vm pause works, and `banger vm cp` copies files",
			rec.Name, rec.Spec.Shares[0].HostPath, rec.Spec.Shares[0].GuestPath)
	}
	drv, _ := s.d.driverFor()
	caps := drv.Capabilities()
	km, err := s.d.kernels.readOrAutoPullKernel(ctx, rec.Spec.Kernel)
	if err != nil {
		return sn, "", err
	}
	dir = filepath.Join(parent, snapTmpPrefix+id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return sn, "", fmt.Errorf("snapshot dir: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	f, err := os.OpenFile(filepath.Join(dir, snapStateName), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return sn, "", err
	}
	defer f.Close()

	t0 := time.Now()
	if !wasPaused {
		op.stage("pause", rec.Name)
		pctx, cancel := context.WithTimeout(ctx, pauseTimeout)
		err := snap.Pause(pctx)
		cancel()
		if err != nil {
			return sn, "", api.Errorf(api.KindUnavailable, "pause VM %q: %w", rec.Name, err)
		}
	}
	resumed := wasPaused
	resume := func() {
		if resumed {
			return
		}
		resumed = true
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pauseTimeout)
		defer cancel()
		if rerr := snap.Resume(rctx); rerr != nil {
			op.log.Warn("resume after snapshot", "vm", rec.Name, "err", rerr)
			err = errors.Join(err, fmt.Errorf("resume VM %q: %w", rec.Name, rerr))
		}
	}
	defer resume()
	op.stage("save_state", rec.Name)
	if err := snap.SaveState(ctx, f); err != nil {
		return sn, "", fmt.Errorf("save the state of VM %q: %w", rec.Name, err)
	}
	op.stage("copy_disks", rec.Name)
	for _, n := range []string{cowName, workDiskName} {
		if err := disk.CloneSparse(filepath.Join(rec.Runtime.Dir, n), filepath.Join(dir, n)); err != nil {
			return sn, "", err
		}
	}
	paused := time.Since(t0)
	op.stage("resume", rec.Name)
	resume()
	if err != nil {
		return sn, "", err
	}
	if !wasPaused {
		s.guestAwake(ctx, rec, lv)
	}
	// Durable before publication; the VM runs meanwhile.
	if err := f.Sync(); err != nil {
		return sn, "", err
	}
	for _, n := range []string{cowName, workDiskName} {
		if err := disk.SyncFile(filepath.Join(dir, n)); err != nil {
			return sn, "", err
		}
	}
	if b, err := os.ReadFile(filepath.Join(rec.Runtime.Dir, knownHostsName)); err == nil {
		if err := disk.WriteFileAtomic(filepath.Join(dir, knownHostsName), b, 0o600); err != nil {
			return sn, "", err
		}
	}
	st, _ := f.Stat()
	sn = model.Snapshot{
		ID: id, Name: name, SourceID: rec.ID, SourceName: rec.Name, Spec: rec.Spec,
		VMM: drv.Name(), Agent: caps.Agent, Network: rec.Runtime.Tap != "", KernelRelease: km.Release, Balloon: rec.Runtime.Balloon,
		Init: rec.Runtime.Init, InitPath: rec.Runtime.InitPath,
		StateBytes: st.Size(), DiskBytes: allocated(filepath.Join(dir, cowName)) + allocated(filepath.Join(dir, workDiskName)),
		Paused: paused, CreatedAt: time.Now().UTC(),
	}
	if c := callerOf(ctx); c.known {
		sn.Spec.OwnerUID = int(c.UID)
	}
	b, err := json.MarshalIndent(sn, "", "  ")
	if err != nil {
		return sn, "", err
	}
	if err := disk.WriteFileAtomic(filepath.Join(dir, snapManifest), b, 0o600); err != nil {
		return sn, "", err
	}
	op.log.Info("snapshot saved", "vm", rec.Name, "snapshot", name, "paused", paused.Round(time.Millisecond).String(),
		"state_bytes", sn.StateBytes, "disk_bytes", sn.DiskBytes)
	return sn, dir, nil
}

// allocated is the space a file takes on disk.
func allocated(path string) int64 {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0
	}
	return st.Blocks * 512
}

// publishSnapshot renames tmp to snapshots/<id> under snapMu, after
// checking again that the name is free (a peer may have published it
// while this one was being written).
func (s *VMService) publishSnapshot(sn model.Snapshot, tmp string) (model.Snapshot, error) {
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	if _, err := s.findSnapshotByName(sn.Name); err == nil {
		return sn, api.Errorf(api.KindAlreadyExists, "snapshot %q already exists", sn.Name)
	}
	final := filepath.Join(s.snapshotsDir(), sn.ID)
	if err := os.Rename(tmp, final); err != nil {
		return sn, fmt.Errorf("publish snapshot %q: %w", sn.Name, err)
	}
	disk.SyncDir(s.snapshotsDir())
	sn.Dir = final
	return sn, nil
}

// DeleteSnapshot removes a snapshot that no restore is reading.
func (s *VMService) DeleteSnapshot(ctx context.Context, ref string) (model.Snapshot, error) {
	op := s.d.beginOperation(ctx, "snapshot.delete", "snapshot", ref)
	sn, err := s.findSnapshot(ctx, ref)
	if err != nil {
		return sn, op.fail(err)
	}
	if err := s.removeSnapshot(sn); err != nil {
		return sn, op.fail(err)
	}
	op.done()
	return sn, nil
}

// removeSnapshot renames the directory out of the listing (atomic
// disappearance), then deletes it. A snapshot a restore is copying from
// is a conflict.
func (s *VMService) removeSnapshot(sn model.Snapshot) error {
	s.snapMu.Lock()
	if s.snapInUse[sn.ID] > 0 {
		s.snapMu.Unlock()
		return api.Errorf(api.KindConflict, "snapshot %q is being restored: try again when the create finishes", sn.Name)
	}
	gone := filepath.Join(s.snapshotsDir(), snapTmpPrefix+"rm-"+sn.ID)
	err := os.Rename(sn.Dir, gone)
	s.snapMu.Unlock()
	if err != nil {
		return fmt.Errorf("remove snapshot %q: %w", sn.Name, err)
	}
	return os.RemoveAll(gone)
}

// useSnapshot pins sn against removal while a restore reads it; the
// returned func unpins. It fails if sn was removed meanwhile.
func (s *VMService) useSnapshot(sn model.Snapshot) (func(), error) {
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	if _, err := os.Stat(filepath.Join(sn.Dir, snapManifest)); err != nil {
		return nil, api.Errorf(api.KindNotFound, "snapshot %q was removed", sn.Name)
	}
	if s.snapInUse == nil {
		s.snapInUse = map[string]int{}
	}
	s.snapInUse[sn.ID]++
	return func() {
		s.snapMu.Lock()
		defer s.snapMu.Unlock()
		if s.snapInUse[sn.ID]--; s.snapInUse[sn.ID] <= 0 {
			delete(s.snapInUse, sn.ID)
		}
	}, nil
}

// deleteSnapshotsOf removes every snapshot of VM id (vm rm
// --with-snapshots); it returns the first failure after trying all.
func (s *VMService) deleteSnapshotsOf(id string) error {
	all, err := s.listSnapshots(asRoot(context.Background()))
	if err != nil {
		return err
	}
	var errs []error
	for _, sn := range all {
		if sn.SourceID == id {
			errs = append(errs, s.removeSnapshot(sn))
		}
	}
	return errors.Join(errs...)
}

// cleanSnapshotTemps removes what interrupted snapshots, forks and
// removals left (runs at start, before any RPC is served).
func (s *VMService) cleanSnapshotTemps() {
	for _, dir := range []string{s.snapshotsDir(), s.warmDir()} {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), snapTmpPrefix) {
				p := filepath.Join(dir, e.Name())
				s.d.log.Info("removing an interrupted snapshot", "dir", p)
				os.RemoveAll(p)
			}
		}
	}
}
