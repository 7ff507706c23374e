package imagebuild

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"banger/internal/disk"
)

// blobCache keeps compressed layer blobs by digest:
// <dir>/sha256/<hex>. Entries are written to a sibling temp file and
// renamed into place, so a blob present under its name is whole; it is
// still hashed on use, since a disk can rot.
type blobCache struct{ dir string }

func (c blobCache) path(d v1.Hash) string {
	return filepath.Join(c.dir, d.Algorithm, d.Hex)
}

// lookup returns the cached blob's path if present and its content hashes
// to d. A corrupt entry is removed so that it is fetched again.
func (c blobCache) lookup(d v1.Hash) (string, bool, error) {
	p := c.path(d)
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	h, err := newHasher(d)
	if err == nil {
		_, err = io.Copy(h, f)
	}
	f.Close()
	if err != nil {
		return "", false, fmt.Errorf("verify cached layer %s: %w", d, err)
	}
	if hex.EncodeToString(h.Sum(nil)) != d.Hex {
		os.Remove(p)
		return "", false, nil
	}
	return p, true, nil
}

// store copies r into the cache under d, checking the digest before the
// entry becomes visible.
func (c blobCache) store(d v1.Hash, r io.Reader) (string, error) {
	p := c.path(d)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return "", err
	}
	tmp := disk.TempSibling(p, "part")
	if err := writeVerified(tmp, d, r); err != nil {
		os.Remove(tmp)
		return "", err
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return "", err
	}
	return p, nil
}

// cleanStale removes temp files and directories that a killed pull left
// in the cache. Age keeps it off a concurrent pull's live temp files.
func (c blobCache) cleanStale(olderThan time.Duration) {
	for _, sub := range []string{"sha256", "built"} {
		ents, _ := os.ReadDir(filepath.Join(c.dir, sub))
		for _, e := range ents {
			if !strings.HasSuffix(e.Name(), ".tmp") {
				continue
			}
			if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > olderThan {
				os.RemoveAll(filepath.Join(c.dir, sub, e.Name()))
			}
		}
	}
}

func writeVerified(p string, d v1.Hash, r io.Reader) error {
	h, err := newHasher(d)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.MultiWriter(f, h), r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != d.Hex {
		return fmt.Errorf("layer blob hashes to %s:%s, want %s", d.Algorithm, got, d)
	}
	return nil
}

func newHasher(d v1.Hash) (hash.Hash, error) {
	if d.Algorithm != "sha256" {
		return nil, fmt.Errorf("digest %s: only sha256 is supported", d)
	}
	return sha256.New(), nil
}

// decompress wraps a layer blob in the right decompressor, found from its
// first bytes rather than its media type (registries mislabel).
func decompress(r io.Reader) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	magic, err := br.Peek(4)
	if err != nil && err != io.EOF {
		return nil, err
	}
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		return gzip.NewReader(br)
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		z, err := zstd.NewReader(br)
		if err != nil {
			return nil, err
		}
		return z.IOReadCloser(), nil
	default:
		return io.NopCloser(br), nil
	}
}

// builtVersion names the layout of built-image cache entries; bump it when
// the way a tree becomes disks changes, so old entries stop matching.
const builtVersion = "v1"

// builtDir is where the disks built from image manifest digest d are kept:
// <dir>/built/v1-<hex>/{rootfs.ext4,seed.ext4}. The seed there has no key.
// The manifest digest pins the config and every layer, so the same digest
// always builds the same disks.
func (c blobCache) builtDir(digest string) (string, bool) {
	h, err := v1.NewHash(digest)
	if err != nil || h.Algorithm != "sha256" {
		return "", false
	}
	return filepath.Join(c.dir, "built", builtVersion+"-"+h.Hex), true
}

// saveBuilt keeps a checked rootfs (hard-linked where possible: it is
// read-only from here on) and a key-less seed (copied: the key goes into
// the image's own copy) under the digest. The entry appears with one
// directory rename, so a reader sees all of it or none.
func (c blobCache) saveBuilt(digest, rootfs, seed string) error {
	final, ok := c.builtDir(digest)
	if !ok {
		return fmt.Errorf("digest %q: not a sha256 digest", digest)
	}
	if _, err := os.Stat(final); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		return err
	}
	tmp := disk.TempSibling(final, "part")
	err := func() error {
		if err := os.Mkdir(tmp, 0o755); err != nil {
			return err
		}
		if err := os.Link(rootfs, filepath.Join(tmp, "rootfs.ext4")); err != nil {
			if err := disk.CopySparse(rootfs, filepath.Join(tmp, "rootfs.ext4")); err != nil {
				return err
			}
		}
		if err := disk.CopySparse(seed, filepath.Join(tmp, "seed.ext4")); err != nil {
			return err
		}
		if err := disk.SyncDir(tmp); err != nil {
			return err
		}
		return os.Rename(tmp, final)
	}()
	if err != nil {
		os.RemoveAll(tmp) // includes losing a rename race to a peer
		return err
	}
	return disk.SyncDir(filepath.Dir(final))
}

// loadBuilt copies the cached disks for digest to rootfs and seed (fresh
// inodes, so the image owns its files) and checks the rootfs. A damaged
// entry is removed and reported as absent.
func (c blobCache) loadBuilt(ctx context.Context, digest, rootfs, seed string) bool {
	dir, ok := c.builtDir(digest)
	if !ok {
		return false
	}
	if _, err := os.Stat(dir); err != nil {
		return false
	}
	err := disk.CopySparse(filepath.Join(dir, "rootfs.ext4"), rootfs)
	if err == nil {
		err = disk.CopySparse(filepath.Join(dir, "seed.ext4"), seed)
	}
	if err == nil {
		err = disk.Fsck(ctx, rootfs)
	}
	if err != nil {
		os.Remove(rootfs)
		os.Remove(seed)
		if ctx.Err() == nil {
			os.RemoveAll(dir)
		}
		return false
	}
	return true
}

// CleanCacheTemp removes every temp file a killed pull left in cacheDir.
// Only for a caller that knows no pull is running (the daemon at start,
// holding its state-dir lock); live pulls use cleanStale's age guard.
func CleanCacheTemp(cacheDir string) {
	blobCache{dir: cacheDir}.cleanStale(0)
}
