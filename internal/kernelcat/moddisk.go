package kernelcat

// The modules disk: every module of a kernel, for the guest.
//
// The initramfs carries only the boot closure (BootModules and their
// dependencies); everything else a guest may modprobe (overlay for Docker,
// br_netfilter, veth, nf_nat, fuse, vhost …) lives on a per-kernel read-only
// ext4 image, kernels/<name>/modules.ext4, attached to every VM of that
// kernel as guestproto.DevModules and mounted by banger-init at
// /lib/modules/<release>. Its root is the release tree itself (kernel/,
// modules.order, modules.builtin …) plus the indexes `depmod` generates on
// the host (modules.dep, modules.alias, their .bin forms …), so kmod's and
// busybox's modprobe/modinfo work in the guest as on any distribution.
//
// The tree is kept as shipped under kernels/<name>/modules-tree/ (modules
// compressed or not, as the source had them) and recorded in the manifest.
// The disk is built at pull/import inside the kernel's temp dir, and again
// by EnsureModulesDisk if it is ever missing.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/disk"
	"banger/internal/guestproto"
)

const (
	// ModulesTreeDir is where a kernel dir keeps its whole module tree.
	ModulesTreeDir = "modules-tree"
	// ModulesDiskFile is the modules disk's name inside a kernel dir.
	ModulesDiskFile = "modules.ext4"
	// modulesDiskLabel is the ext4 label of every modules disk.
	modulesDiskLabel = "banger-modules"
	// modulesStagePrefix names the staging dirs a build leaves only if it
	// is killed; EnsureModulesDisk removes them under its lock.
	modulesStagePrefix = ".modules-stage-"
)

// keepModuleTree makes src (a full lib/modules/<release> tree) the kernel's
// ModulesTree and builds its modules disk, both inside dir (the kernel's
// temp dir during a pull). A tree unpacked inside dir by the pull itself is
// moved; an imported one is copied. Symlinks and special files are not
// kept. A tree with no module files (everything built in) or a kernel whose
// release is unknown gets neither tree nor disk.
func keepModuleTree(ctx context.Context, dir, src string, m *Manifest, progress Progress) error {
	release := m.Release
	n, err := countModules(src)
	if err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	if !guestproto.ValidRelease(release) {
		progress("modules_disk", fmt.Sprintf("no modules disk: the kernel's release %q is unknown or not a usable directory name; the guest gets the boot modules only", release), 0, 0)
		return nil
	}
	dst := filepath.Join(dir, ModulesTreeDir)
	if strings.HasPrefix(src, dir+string(filepath.Separator)) {
		if err := os.Rename(src, dst); err != nil {
			return fmt.Errorf("keep module tree: %w", err)
		}
	} else if err := copyTree(ctx, src, dst); err != nil {
		return err
	}
	// Record what was kept (and drop what is not kept: links, devices).
	err = filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		if !d.Type().IsRegular() {
			return os.Remove(p)
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		sum, size, err := hashFile(p)
		if err != nil {
			return err
		}
		m.Files[filepath.ToSlash(rel)] = sum
		m.SizeBytes += size
		return nil
	})
	if err != nil {
		return fmt.Errorf("keep module tree: %w", err)
	}
	if err := syncFS(dir); err != nil {
		return err
	}
	m.ModulesTree, m.ModulesRelease = ModulesTreeDir, release
	start := time.Now()
	progress("modules_disk", fmt.Sprintf("depmod and mkfs.ext4 for %d modules", n), 0, 0)
	if err := buildModulesDisk(ctx, dir, ModulesTreeDir, release, filepath.Join(dir, ModulesDiskFile)); err != nil {
		return err
	}
	m.ModulesDisk = ModulesDiskFile
	progress("modules_disk", fmt.Sprintf("%s: %d modules for %s in %s", ModulesDiskFile, n, release, time.Since(start).Round(time.Millisecond)), 0, 0)
	return nil
}

func countModules(root string) (int, error) {
	n := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && isModuleFile(d.Name()) {
			n++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("module tree %s: %w", root, err)
	}
	return n, nil
}

// copyTree copies the directories and regular files of src to dst (which
// must not exist). Files are not fsynced one by one: the caller syncs the
// filesystem once (syncFS) before publishing.
func copyTree(ctx context.Context, src, dst string) error {
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.Mkdir(target, 0o755)
		case d.Type().IsRegular():
			return copyPlain(p, target)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("copy module tree %s: %w", src, err)
	}
	return nil
}

func copyPlain(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("write %s: %w", dst, err)
	}
	return out.Close()
}

func hashFile(p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("read %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// syncFS flushes the filesystem holding dir: one syncfs(2) instead of an
// fsync per file of a thousand-file tree.
func syncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// buildModulesDisk builds out from kernelDir/tree: a staging copy of the
// tree (module files hard-linked, the small metadata files copied, so depmod
// can never write through a link into the kept tree), `depmod` over it, then
// mkfs.ext4 -d into a temp sibling of out, e2fsck, fsync, rename.
func buildModulesDisk(ctx context.Context, kernelDir, tree, release, out string) error {
	modulesDiskBuilds.Add(1)
	depmod, err := findDepmod()
	if err != nil {
		return err
	}
	stage, err := os.MkdirTemp(kernelDir, modulesStagePrefix)
	if err != nil {
		return fmt.Errorf("modules disk: %w", err)
	}
	defer os.RemoveAll(stage)
	root := filepath.Join(stage, "lib", "modules", release)
	if err := os.MkdirAll(filepath.Dir(root), 0o755); err != nil {
		return fmt.Errorf("modules disk: %w", err)
	}
	if err := stageTree(ctx, filepath.Join(kernelDir, filepath.FromSlash(tree)), root); err != nil {
		return err
	}
	// -C: an empty config dir, so the host's /etc/depmod.d cannot change
	// what the guest sees.
	conf := filepath.Join(stage, "depmod.d")
	if err := os.Mkdir(conf, 0o755); err != nil {
		return fmt.Errorf("modules disk: %w", err)
	}
	if err := runStreaming(ctx, "", nil, depmod, "-C", conf, "-b", stage, release); err != nil {
		return fmt.Errorf("depmod for %s: %w", release, err)
	}
	if _, err := os.Stat(filepath.Join(root, "modules.dep")); err != nil {
		return fmt.Errorf("depmod for %s wrote no modules.dep: %w", release, err)
	}
	size, err := disk.SizeForTree(root)
	if err != nil {
		return err
	}
	tmp := disk.TempSibling(out, "build")
	defer os.Remove(tmp) // no-op after the rename
	if err := disk.MkfsExt4FromDir(ctx, root, tmp, size, modulesDiskLabel); err != nil {
		return fmt.Errorf("modules disk: %w", err)
	}
	if err := disk.Fsck(ctx, tmp); err != nil {
		return fmt.Errorf("modules disk: %w", err)
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		return err
	}
	if err := disk.SyncFile(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, out); err != nil {
		return fmt.Errorf("publish modules disk: %w", err)
	}
	return disk.SyncDir(kernelDir)
}

// modulesDiskBuilds counts buildModulesDisk calls (for tests).
var modulesDiskBuilds atomic.Int64

// findDepmod looks on PATH and in the sbin dirs a non-root PATH may lack.
func findDepmod() (string, error) {
	if p, err := exec.LookPath("depmod"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/depmod", "/sbin/depmod", "/usr/bin/depmod", "/bin/depmod"} {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", errors.New("depmod not found: building the kernel's modules disk needs kmod's depmod (apt-get install kmod, or run scripts/install-deps.sh)")
}

// stageTree mirrors src into dst: dirs made, module files hard-linked
// (copied across filesystems), other regular files copied.
func stageTree(ctx context.Context, src, dst string) error {
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.Mkdir(target, 0o755)
		case !d.Type().IsRegular():
			return nil
		case isModuleFile(d.Name()):
			if err := os.Link(p, target); err == nil {
				return nil
			}
		}
		return copyPlain(p, target)
	})
	if err != nil {
		return fmt.Errorf("stage module tree: %w", err)
	}
	return nil
}

// EnsureModulesDisk returns the path of the kernel's modules disk, building
// it first if the kernel keeps its module tree (m.ModulesTree) but the disk
// is absent. It returns "" and no error for a kernel without a kept tree:
// one with everything built in, or one pulled by a banger that kept only the
// boot closure; such a VM boots without a modules disk, as before.
//
// Safe to call concurrently, from goroutines and processes: the build runs
// under an exclusive flock on kernelDir and publishes by rename, so parallel
// starts build it once and the rest wait for it (or ctx). kernelDir is
// kernelcat.Dir(kernelsDir, m.Name).
func EnsureModulesDisk(ctx context.Context, kernelDir string, m *Manifest) (string, error) {
	if m == nil || m.ModulesTree == "" {
		return "", nil
	}
	name := m.ModulesDisk
	if name == "" {
		name = ModulesDiskFile
	}
	if !guestproto.ValidRelease(m.ModulesRelease) || name != filepath.Base(name) || strings.HasPrefix(name, ".") ||
		m.ModulesTree != filepath.Base(m.ModulesTree) || strings.HasPrefix(m.ModulesTree, ".") {
		return "", fmt.Errorf("kernel %q: manifest has modules tree %q, disk %q, release %q (remove it with: banger kernel rm %s)",
			m.Name, m.ModulesTree, m.ModulesDisk, m.ModulesRelease, m.Name)
	}
	out := filepath.Join(kernelDir, name)
	if st, err := os.Stat(out); err == nil && st.Mode().IsRegular() {
		return out, nil
	}
	tree := filepath.Join(kernelDir, m.ModulesTree)
	if st, err := os.Stat(tree); err != nil || !st.IsDir() {
		return "", nil
	}
	unlock, err := lockDir(ctx, kernelDir)
	if err != nil {
		return "", fmt.Errorf("modules disk for kernel %q: %w", m.Name, err)
	}
	defer unlock()
	if st, err := os.Stat(out); err == nil && st.Mode().IsRegular() {
		return out, nil // a peer built it while we waited
	}
	// Under the lock, leftovers are from a build that was killed.
	if ents, err := os.ReadDir(kernelDir); err == nil {
		for _, e := range ents {
			n := e.Name()
			if strings.HasPrefix(n, modulesStagePrefix) || strings.HasPrefix(n, name+".build.") && strings.HasSuffix(n, ".tmp") {
				os.RemoveAll(filepath.Join(kernelDir, n))
			}
		}
	}
	if err := buildModulesDisk(ctx, kernelDir, m.ModulesTree, m.ModulesRelease, out); err != nil {
		return "", fmt.Errorf("modules disk for kernel %q: %w", m.Name, err)
	}
	return out, nil
}

// lockDir takes an exclusive flock on dir, polling so that ctx can end the
// wait. flock locks belong to the open file, so goroutines of one process
// exclude each other too.
func lockDir(ctx context.Context, dir string) (func(), error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", dir, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}
