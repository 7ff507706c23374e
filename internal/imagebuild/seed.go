package imagebuild

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/crypto/ssh"

	"banger/internal/disk"
)

// Inside the work seed, whose root is the guest's /root.
const (
	sshDirInSeed   = "/.ssh"
	authKeysInSeed = "/.ssh/authorized_keys"
)

// installKey makes .ssh (0700) and .ssh/authorized_keys (0600), both
// root-owned, in the seed image, replacing whatever the image had there
// (a symlink included: debugfs works inside the image only).
func installKey(ctx context.Context, seed string, content []byte) error {
	if err := disk.MkdirExt4(ctx, seed, sshDirInSeed, 0o700, 0, 0); err != nil {
		return fmt.Errorf("install key in %s: %w", seed, err)
	}
	if err := disk.WriteFileToExt4(ctx, seed, authKeysInSeed, content, 0o600, 0, 0); err != nil {
		return fmt.Errorf("install key in %s: %w", seed, err)
	}
	return nil
}

// MaterializeWorkDisk makes a VM's work disk at dst, size bytes, from the
// image's work seed: a sparse copy of the seed to a sibling temp file,
// grown with resize2fs, checked with e2fsck, then renamed to dst. The seed
// is opened once, so a concurrent RefreshWorkSeed (which renames a new
// seed into place) cannot tear the copy.
func MaterializeWorkDisk(ctx context.Context, seed, dst string, size int64) error {
	st, err := os.Stat(seed)
	if err != nil {
		return fmt.Errorf("work disk from seed: %w", err)
	}
	if size < st.Size() {
		return fmt.Errorf("work disk %s: size %d bytes is smaller than the image's work seed (%d bytes); ask for at least %d MiB",
			dst, size, st.Size(), (st.Size()+(1<<20)-1)>>20)
	}
	tmp := disk.TempSibling(dst, "materialize")
	err = func() error {
		if err := disk.CopySparse(seed, tmp); err != nil {
			return err
		}
		if err := disk.Grow(ctx, tmp, size); err != nil {
			return err
		}
		if err := disk.Fsck(ctx, tmp); err != nil {
			return err
		}
		if err := disk.SyncFile(tmp); err != nil {
			return err
		}
		return os.Rename(tmp, dst)
	}()
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("work disk %s from %s: %w", dst, seed, err)
	}
	return disk.SyncDir(filepath.Dir(dst))
}

// RefreshWorkSeed puts a new authorized key into the work seed and returns
// its fingerprint. The seed is copied to <seed>.refresh.<pid>-<unixnano>.tmp,
// the key rewritten there, the copy checked and fsynced, then renamed over
// the seed: a reader copying the seed meanwhile sees the old or the new
// image, never a mix. The caller records the fingerprint after this
// returns, so the record always matches the disk.
func RefreshWorkSeed(ctx context.Context, seed string, authorizedKey []byte) (string, error) {
	content, fp, err := parseKey(authorizedKey)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(seed); err != nil {
		return "", fmt.Errorf("refresh work seed: %w", err)
	}
	tmp := disk.TempSibling(seed, "refresh")
	err = func() error {
		if err := disk.CopySparse(seed, tmp); err != nil {
			return err
		}
		if err := installKey(ctx, tmp, content); err != nil {
			return err
		}
		if err := disk.Fsck(ctx, tmp); err != nil {
			return err
		}
		if err := disk.SyncFile(tmp); err != nil {
			return err
		}
		return os.Rename(tmp, seed)
	}()
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("refresh work seed %s: %w", seed, err)
	}
	if err := disk.SyncDir(filepath.Dir(seed)); err != nil {
		return "", err
	}
	return fp, nil
}

// MaxAuthorizedKeys bounds what the host reads of .ssh/authorized_keys
// on a work disk: the guest writes that file (a 16 TiB sparse one costs it
// nothing), and the host reads it at every start.
const MaxAuthorizedKeys = 1 << 20

// AuthorizedKeysOnDisk returns .ssh/authorized_keys from a work seed or a
// work disk (both have the guest's /root as their root), so a caller can
// notice a rotated key. A missing file matches fs.ErrNotExist; one over
// MaxAuthorizedKeys (disk.ErrTooLarge) or not a regular file
// (disk.ErrNotRegular) is refused before anything of it is read.
func AuthorizedKeysOnDisk(ctx context.Context, img string) ([]byte, error) {
	return disk.ReadSmallFileFromExt4(ctx, img, authKeysInSeed, MaxAuthorizedKeys)
}

// SetAsideSuffix is appended to an authorized_keys that AddAuthorizedKey
// would not read (too large, not a regular file): kept, never read.
const SetAsideSuffix = ".banger-unread"

// KeyFingerprint returns the SHA256 fingerprint of one OpenSSH public key
// line, as recorded in Result.KeyFingerprint.
func KeyFingerprint(authorizedKey []byte) (string, error) {
	_, fp, err := parseKey(authorizedKey)
	return fp, err
}

// SetAuthorizedKey rewrites .ssh/authorized_keys on a work disk in place
// and returns the key's fingerprint. Only for a disk no VM is running on;
// shared seeds go through RefreshWorkSeed instead.
func SetAuthorizedKey(ctx context.Context, img string, authorizedKey []byte) (string, error) {
	content, fp, err := parseKey(authorizedKey)
	if err != nil {
		return "", err
	}
	if err := installKey(ctx, img, content); err != nil {
		return "", err
	}
	if err := disk.SyncFile(img); err != nil {
		return "", err
	}
	return fp, nil
}

// AddAuthorizedKey makes sure a stopped VM's work disk authorizes key (one
// OpenSSH public key line) and none of retire (the daemon's earlier keys),
// keeping every other line: after `ssh-key rotate` an existing VM gets the
// new key at its next start, loses the old one, and keeps the user's own
// keys. It reports whether the disk changed.
func AddAuthorizedKey(ctx context.Context, img string, key []byte, retire [][]byte) (bool, error) {
	line, _, err := parseKey(key)
	if err != nil {
		return false, err
	}
	want, _, _, _, err := ssh.ParseAuthorizedKey(line)
	if err != nil {
		return false, err
	}
	retired := map[string]bool{}
	for _, r := range retire {
		if k, _, _, _, err := ssh.ParseAuthorizedKey(r); err == nil {
			retired[string(k.Marshal())] = true
		}
	}
	have, err := AuthorizedKeysOnDisk(ctx, img)
	if errors.Is(err, disk.ErrTooLarge) || errors.Is(err, disk.ErrNotRegular) {
		// Not an authorized_keys the host will read: kept under another
		// name for the guest's owner, replaced by the daemon's key alone.
		if err := disk.SetAsideInExt4(ctx, img, authKeysInSeed, SetAsideSuffix); err != nil {
			return false, err
		}
		have, err = nil, nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	var out []byte
	present, changed := false, false
	for _, l := range bytes.SplitAfter(have, []byte("\n")) {
		if len(l) == 0 {
			continue
		}
		if k, _, _, _, err := ssh.ParseAuthorizedKey(l); err == nil {
			if retired[string(k.Marshal())] {
				changed = true
				continue
			}
			if bytes.Equal(k.Marshal(), want.Marshal()) {
				present = true
			}
		}
		out = append(out, l...)
		if out[len(out)-1] != '\n' {
			out = append(out, '\n')
		}
	}
	if !present {
		out = append(out, line...)
		changed = true
	}
	if !changed {
		return false, nil
	}
	if err := installKey(ctx, img, out); err != nil {
		return false, err
	}
	return true, disk.SyncFile(img)
}
