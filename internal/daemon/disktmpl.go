package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"banger/internal/disk"
	"banger/internal/imagebuild"
	"banger/internal/model"
)

// Disk templates. A new VM's overlay is an empty ext4 of its size and its
// work disk the image's work seed grown to its size and checked: the same
// bytes for every VM of that size (and seed). Making them per create
// (mkfs.ext4; copy, resize2fs, e2fsck, fsync) was most of a create's
// host-side time, so each is made once, as a template, and a create
// clones it (a reflink where the filesystem has them, else a sparse copy
// of the few MiB in use).
//
// The clone is not fsynced: the guest's first flush (ext4's journal
// commit at mount) makes QEMU fdatasync the file, and a host that dies
// before that leaves a VM that never ran, whose next start remakes a
// missing disk. Templates are fsynced and renamed into place, so a
// template that exists is whole.
//
//	state/cache/cow-<bytes>.ext4                      the overlays
//	<image dir>/work-cache-<bytes>-<seed stamp>.ext4  the work disks
//
// A work template is named by its seed's inode and mtime: a seed
// rewritten for a new daemon key (a rename: a new inode) gets a new
// template, and the old ones of that size go when it is made. Image
// removal takes its templates with its directory.

// cowTemplate returns the overlay template of size bytes, making it once.
func (s *VMService) cowTemplate(ctx context.Context, size int64) (string, error) {
	dir := filepath.Join(s.d.cfg.StateDir, "cache")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	path := filepath.Join(dir, "cow-"+strconv.FormatInt(size, 10)+".ext4")
	return path, s.template(ctx, path, func(tmp string) error {
		empty, err := os.MkdirTemp(dir, ".empty-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(empty)
		if err := disk.MkfsExt4FromDir(ctx, empty, tmp, size, "banger-cow"); err != nil {
			return err
		}
		return disk.SyncFile(tmp)
	})
}

// workTemplate returns img's work template of size bytes, making it once
// per seed.
func (s *VMService) workTemplate(ctx context.Context, img model.Image, size int64) (string, error) {
	seed := filepath.Join(img.Dir, imagebuild.WorkSeedName)
	var st syscall.Stat_t
	if err := syscall.Stat(seed, &st); err != nil {
		return "", fmt.Errorf("work seed of image %q: %w", img.Name, &os.PathError{Op: "stat", Path: seed, Err: err})
	}
	prefix := "work-cache-" + strconv.FormatInt(size, 10) + "-"
	path := filepath.Join(img.Dir, fmt.Sprintf("%s%d-%d.ext4", prefix, st.Ino, st.Mtim.Nano()))
	return path, s.template(ctx, path, func(tmp string) error {
		if err := imagebuild.MaterializeWorkDisk(ctx, seed, tmp, size); err != nil {
			return err
		}
		// Templates of older seeds of this size: clones already made
		// keep their open files.
		ents, _ := os.ReadDir(img.Dir)
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), prefix) && strings.HasSuffix(e.Name(), ".ext4") && e.Name() != filepath.Base(path) {
				os.Remove(filepath.Join(img.Dir, e.Name()))
			}
		}
		return nil
	})
}

// template makes path with build (into a temp sibling, renamed into
// place) unless it exists; one build per path at a time.
func (s *VMService) template(ctx context.Context, path string, build func(tmp string) error) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	unlock, err := s.tmplLocks.Lock(ctx, path)
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	tmp := disk.TempSibling(path, "tmpl")
	if err := build(tmp); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return disk.SyncDir(filepath.Dir(path))
}

// cloneInto copies a template to dst (temp sibling, then rename: dst
// exists whole or not at all).
func cloneInto(tmpl, dst string) error {
	tmp := disk.TempSibling(dst, "clone")
	if err := disk.CloneSparse(tmpl, tmp); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
