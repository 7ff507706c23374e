// Package imagebuild turns OCI images (pulled from a registry, or imported
// from an OCI layout directory or a `docker save` tarball) and plain
// directory trees into banger images: a read-only rootfs.ext4, a small
// work-seed.ext4 holding the image's /root plus the daemon's SSH key, and
// manifest.json. It also makes VM work disks from a seed and refreshes a
// seed's key without ever exposing a torn image to readers.
//
// Everything is built inside Options.WorkDir, a temp directory the caller
// renames into place once a build succeeds; on failure nothing built is
// left in it.
package imagebuild

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sync/errgroup"

	"banger/internal/disk"
	"banger/internal/model"
)

// File names inside a built image directory.
const (
	RootfsName   = "rootfs.ext4"
	WorkSeedName = "work-seed.ext4"
	ManifestName = "manifest.json"

	// DefaultPlatform is what a multi-arch index is resolved to.
	DefaultPlatform = "linux/amd64"

	// scratch holds every intermediate of a build. It is 0700 because a
	// layer's setuid binaries sit in it on the host until mkfs has run.
	scratch  = "build.tmp"
	treeName = scratch + "/rootfs"
	seedTree = scratch + "/seed"
)

// Options say where and how to build.
type Options struct {
	// WorkDir is where the image is built (created if missing). Give a
	// fresh temp dir on the same filesystem as the images directory so
	// the caller can publish it with one rename.
	WorkDir string
	// CacheDir keeps compressed layer blobs by digest
	// (<CacheDir>/sha256/<hex>) and the disks built from each pulled
	// image manifest digest (<CacheDir>/built/v1-<hex>/), so a re-pull
	// fetches only missing layers and a same-digest re-pull skips the
	// build. Empty means no cache.
	CacheDir string
	// AuthorizedKey is one OpenSSH public key line, written to the work
	// seed's .ssh/authorized_keys. Required.
	AuthorizedKey []byte
	// Progress, if set, receives stages ("resolve", "layer", "apply",
	// "mkfs", "cached", "seed", "fsck", "done"); for "layer", msg is the
	// short digest and done/total are bytes; for "apply", done/total count
	// layers. Calls are serialized.
	Progress func(stage, msg string, done, total int64)
	// Platform picked from multi-arch indexes; DefaultPlatform if empty.
	Platform string
	// Limits bound what the layers may expand to (zero fields: the
	// DefaultLimits values). Layers are untrusted input.
	Limits Limits
}

// Result describes a built image directory.
type Result struct {
	Dir            string            // = Options.WorkDir: rootfs.ext4, work-seed.ext4, manifest.json
	Digest         string            // image manifest digest ("" for BuildFromTree)
	Config         model.ImageConfig // from the OCI config
	SizeBytes      int64             // apparent size of rootfs.ext4 plus work-seed.ext4
	KeyFingerprint string            // ssh.FingerprintSHA256 of AuthorizedKey
}

// Manifest is manifest.json in an image directory.
type Manifest struct {
	Source         string            `json:"source"` // "oci", "import" or "tree"
	Ref            string            `json:"ref"`    // the reference, path or tree it came from
	Digest         string            `json:"digest,omitempty"`
	IndexDigest    string            `json:"index_digest,omitempty"`
	Platform       string            `json:"platform,omitempty"`
	Config         model.ImageConfig `json:"config"`
	Layers         []string          `json:"layers,omitempty"`
	KeyFingerprint string            `json:"key_fingerprint"`
	RootfsBytes    int64             `json:"rootfs_bytes"`
	WorkSeedBytes  int64             `json:"work_seed_bytes"`
	CreatedAt      time.Time         `json:"created_at"`
}

// ReadManifest reads dir/manifest.json.
func ReadManifest(dir string) (*Manifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, ManifestName))
	if err != nil {
		return nil, err
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, ManifestName), err)
	}
	return &m, nil
}

// build is the state of one build in WorkDir.
type build struct {
	o        Options
	budget   *budget // shared by every layer of this build
	key      []byte  // normalized authorized_keys content
	fp       string
	progress func(stage, msg string, done, total int64)
}

func newBuild(o Options) (*build, error) {
	if o.WorkDir == "" {
		return nil, errors.New("imagebuild: Options.WorkDir is empty; give a temp dir next to the images directory")
	}
	o.Limits = o.Limits.withDefaults()
	key, fp, err := parseKey(o.AuthorizedKey)
	if err != nil {
		return nil, err
	}
	if o.Platform == "" {
		o.Platform = DefaultPlatform
	}
	if err := os.MkdirAll(o.WorkDir, 0o755); err != nil {
		return nil, fmt.Errorf("work dir: %w", err)
	}
	sc := filepath.Join(o.WorkDir, scratch)
	if err := os.RemoveAll(sc); err != nil {
		return nil, fmt.Errorf("work dir: %w", err)
	}
	if err := os.Mkdir(sc, 0o700); err != nil {
		return nil, fmt.Errorf("work dir: %w", err)
	}
	b := &build{o: o, budget: &budget{Limits: o.Limits}, key: key, fp: fp, progress: func(string, string, int64, int64) {}}
	if o.Progress != nil {
		var mu sync.Mutex
		b.progress = func(stage, msg string, done, total int64) {
			mu.Lock()
			defer mu.Unlock()
			o.Progress(stage, msg, done, total)
		}
	}
	return b, nil
}

// parseKey checks that key is exactly one OpenSSH public key and returns
// the authorized_keys content for it and its SHA256 fingerprint.
func parseKey(key []byte) ([]byte, string, error) {
	line := bytes.TrimSpace(key)
	if len(line) == 0 {
		return nil, "", errors.New("authorized key is empty: pass the daemon's public key (ssh/id_ed25519.pub)")
	}
	if bytes.ContainsAny(line, "\r\n") {
		return nil, "", errors.New("authorized key has several lines: pass exactly one OpenSSH public key line")
	}
	pub, _, _, rest, err := ssh.ParseAuthorizedKey(line)
	if err != nil {
		return nil, "", fmt.Errorf("authorized key %q: %w", truncate(string(line), 40), err)
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, "", errors.New("authorized key has trailing data: pass exactly one OpenSSH public key line")
	}
	// A fresh slice: line shares the caller's array, which other builds
	// may be reading (appending in place would write into it).
	out := append(append(make([]byte, 0, len(line)+1), line...), '\n')
	return out, ssh.FingerprintSHA256(pub), nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// cleanup removes everything this build may have made in WorkDir; called
// when a build fails so no partial image is left.
func (b *build) cleanup() {
	for _, n := range []string{scratch, RootfsName, WorkSeedName, ManifestName} {
		os.RemoveAll(filepath.Join(b.o.WorkDir, n))
	}
}

// freshTree makes an empty WorkDir/rootfs.tree to apply layers to.
func (b *build) freshTree() (string, error) {
	tree := filepath.Join(b.o.WorkDir, treeName)
	if err := os.RemoveAll(tree); err != nil {
		return "", err
	}
	if err := os.Mkdir(tree, 0o755); err != nil {
		return "", err
	}
	return tree, nil
}

// splitRoot moves the tree's /root out to be the work seed's content and
// leaves an empty /root with the same owner and mode, which is where the
// guest mounts the work disk. Only for trees this build owns.
func (b *build) splitRoot(tree string) (string, error) {
	src := filepath.Join(tree, "root")
	st, err := os.Lstat(src)
	if err != nil || !st.IsDir() {
		return "", nil // no usable /root: an empty seed
	}
	seed := filepath.Join(b.o.WorkDir, seedTree)
	if err := os.Rename(src, seed); err != nil {
		return "", err
	}
	if err := os.Mkdir(src, st.Mode().Perm()); err != nil {
		return "", err
	}
	sys := st.Sys().(*syscall.Stat_t)
	if err := os.Lchown(src, int(sys.Uid), int(sys.Gid)); err != nil {
		return "", err
	}
	return seed, os.Chmod(src, st.Mode()&(os.ModePerm|os.ModeSticky|os.ModeSetgid|os.ModeSetuid))
}

// finish turns the tree into rootfs.ext4 and the seed source (a directory,
// or "" for an empty seed) into work-seed.ext4 with the key, checks both,
// and writes manifest.json. A pulled image's disks are also kept in the
// built-image cache, so a re-pull of the same digest skips the build.
func (b *build) finish(ctx context.Context, tree, seedSrc string, m *Manifest) (*Result, error) {
	if err := b.buildDisks(ctx, tree, seedSrc); err != nil {
		return nil, err
	}
	if b.o.CacheDir != "" && m.Source == "oci" {
		// Best effort: a cache that cannot be written costs speed only.
		_ = blobCache{dir: b.o.CacheDir}.saveBuilt(m.Digest,
			filepath.Join(b.o.WorkDir, RootfsName), filepath.Join(b.o.WorkDir, WorkSeedName))
	}
	return b.publish(ctx, m)
}

// buildDisks makes WorkDir/rootfs.ext4 (checked) and a key-less
// WorkDir/work-seed.ext4.
func (b *build) buildDisks(ctx context.Context, tree, seedSrc string) error {
	dir := b.o.WorkDir
	if seedSrc == "" {
		seedSrc = filepath.Join(dir, seedTree)
		if err := os.MkdirAll(seedSrc, 0o700); err != nil {
			return err
		}
	}
	rootfs, seed := filepath.Join(dir, RootfsName), filepath.Join(dir, WorkSeedName)
	b.progress("mkfs", RootfsName, 0, 0)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		size, err := disk.SizeForTree(tree)
		if err != nil {
			return err
		}
		if err := disk.MkfsExt4FromDir(gctx, tree, rootfs, size, "banger-root"); err != nil {
			return err
		}
		return disk.Fsck(gctx, rootfs)
	})
	g.Go(func() error {
		size, err := disk.SizeForTree(seedSrc)
		if err != nil {
			return err
		}
		if err := disk.MkfsExt4FromDir(gctx, seedSrc, seed, size, "banger-work"); err != nil {
			return err
		}
		// mkfs -d does not carry the source root's mode; the seed's root
		// is the guest's /root, usually 0700.
		st, err := os.Stat(seedSrc)
		if err != nil {
			return err
		}
		return disk.MkdirExt4(gctx, seed, "/", st.Mode().Perm(), 0, 0)
	})
	if err := g.Wait(); err != nil {
		return err
	}
	if err := os.RemoveAll(filepath.Join(dir, scratch)); err != nil {
		return fmt.Errorf("remove build tree: %w", err)
	}
	return nil
}

// publish installs the key into WorkDir/work-seed.ext4, checks it, syncs
// both disks and writes manifest.json.
func (b *build) publish(ctx context.Context, m *Manifest) (*Result, error) {
	dir := b.o.WorkDir
	rootfs, seed := filepath.Join(dir, RootfsName), filepath.Join(dir, WorkSeedName)
	b.progress("seed", WorkSeedName, 0, 0)
	if err := installKey(ctx, seed, b.key); err != nil {
		return nil, err
	}
	if err := disk.Fsck(ctx, seed); err != nil {
		return nil, err
	}
	b.progress("fsck", "ok", 0, 0)
	rst, err := os.Stat(rootfs)
	if err != nil {
		return nil, err
	}
	sst, err := os.Stat(seed)
	if err != nil {
		return nil, err
	}
	for _, p := range []string{rootfs, seed} {
		if err := disk.SyncFile(p); err != nil {
			return nil, err
		}
	}
	m.KeyFingerprint = b.fp
	m.RootfsBytes, m.WorkSeedBytes = rst.Size(), sst.Size()
	m.CreatedAt = time.Now().UTC()
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := disk.WriteFileAtomic(filepath.Join(dir, ManifestName), append(data, '\n'), 0o644); err != nil {
		return nil, err
	}
	b.progress("done", m.Digest, 0, 0)
	return &Result{
		Dir:            dir,
		Digest:         m.Digest,
		Config:         m.Config,
		SizeBytes:      rst.Size() + sst.Size(),
		KeyFingerprint: b.fp,
	}, nil
}

// BuildFromTree builds an image from a root filesystem tree made elsewhere
// (debootstrap). The tree is only read: its /root becomes the work seed's
// content and also stays in rootfs.ext4, where the work disk mounted on
// /root hides it.
func BuildFromTree(ctx context.Context, tree string, cfg model.ImageConfig, o Options) (*Result, error) {
	b, err := newBuild(o)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(tree)
	if err != nil {
		return nil, fmt.Errorf("build from tree: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("build from tree %s: not a directory", tree)
	}
	seedSrc := ""
	if rst, err := os.Lstat(filepath.Join(tree, "root")); err == nil && rst.IsDir() {
		seedSrc = filepath.Join(tree, "root")
	}
	res, err := b.finish(ctx, tree, seedSrc, &Manifest{Source: "tree", Ref: tree, Config: cfg})
	if err != nil {
		b.cleanup()
		return nil, fmt.Errorf("build from tree %s: %w", tree, err)
	}
	return res, nil
}
