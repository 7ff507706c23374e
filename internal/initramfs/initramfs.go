// Package initramfs builds the initramfs banger boots every guest with: a
// gzip-compressed cpio (newc) holding banger-init as /init plus the kernel
// modules that kernel needs before it can see its disks, network and agent
// channel (virtio_mmio, virtio_blk, overlay ...), with their load order in
// /etc/banger/modules.
//
// One initramfs is cached per kernel directory and per banger-init build:
// its file name carries a hash of the banger-init binary and the modules, so
// upgrading banger rebuilds it on the next boot.
package initramfs

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"

	"banger/internal/guestproto"
)

// formatVersion changes whenever the layout written by Build changes, so
// cached images built by an older banger are not reused.
const formatVersion = "banger-initramfs-v1"

// Build writes a gzip-compressed cpio initramfs to out (via a temp sibling
// and rename) holding initBinary as /init and each module, given as a path
// relative to kernelDir (e.g. "modules/kernel/drivers/virtio/virtio_mmio.ko"),
// at /lib/modules/<that path>. /etc/banger/modules lists them in the given
// order, which must be a valid load order (dependencies first).
func Build(ctx context.Context, initBinary, kernelDir string, modules []string, out string) error {
	if err := checkModules(modules); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-*")
	if err != nil {
		return fmt.Errorf("create initramfs: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if err := write(ctx, tmp, initBinary, kernelDir, modules); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("create initramfs: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write initramfs %s: %w", out, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write initramfs %s: %w", out, err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return fmt.Errorf("publish initramfs: %w", err)
	}
	return nil
}

func write(ctx context.Context, f *os.File, initBinary, kernelDir string, modules []string) error {
	bw := bufio.NewWriterSize(f, 1<<20)
	gz, err := gzip.NewWriterLevel(bw, gzip.BestSpeed)
	if err != nil {
		return err
	}
	c := &cpioWriter{w: gz}
	for _, d := range []string{"dev", "proc", "sys", "run", "mnt", "mnt/lower", "mnt/upper", "mnt/root", "etc", "etc/banger", "root", "tmp"} {
		c.Dir(d, 0o755)
	}
	// The kernel opens /dev/console from the initramfs for PID 1's stdio
	// before banger-init mounts devtmpfs; without it early errors vanish.
	c.CharDev("dev/console", 0o600, 5, 1)

	if err := addFile(c, "init", 0o755, initBinary); err != nil {
		return err
	}
	dirs := map[string]bool{}
	var list strings.Builder
	for _, m := range modules {
		if err := ctx.Err(); err != nil {
			return err
		}
		dst := path.Join(strings.TrimPrefix(guestproto.ModulesDir, "/"), m)
		for d := path.Dir(dst); d != "." && !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
		}
		list.WriteString("/" + dst + "\n")
	}
	// Lexical order puts every parent before its children. The kernel would
	// create missing parents itself; listing them keeps modes explicit.
	for _, d := range slices.Sorted(maps.Keys(dirs)) {
		c.Dir(d, 0o755)
	}
	for _, m := range modules {
		dst := path.Join(strings.TrimPrefix(guestproto.ModulesDir, "/"), m)
		if err := addFile(c, dst, 0o644, filepath.Join(kernelDir, filepath.FromSlash(m))); err != nil {
			return err
		}
	}
	c.File(strings.TrimPrefix(guestproto.ModulesListPath, "/"), 0o644, []byte(list.String()))
	if err := c.Close(); err != nil {
		return fmt.Errorf("write initramfs: %w", err)
	}
	if err := gz.Close(); err != nil {
		return fmt.Errorf("write initramfs: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write initramfs: %w", err)
	}
	return nil
}

func addFile(c *cpioWriter, name string, perm uint32, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("initramfs: %s is not a regular file", src)
	}
	c.FileFrom(name, perm, st.Size(), f)
	return c.err
}

// checkModules rejects module paths that would escape /lib/modules in the
// image or the kernel directory on the host.
func checkModules(modules []string) error {
	seen := map[string]bool{}
	for _, m := range modules {
		clean := path.Clean(m)
		if m == "" || path.IsAbs(m) || clean != m || clean == "." || strings.HasPrefix(clean, "../") || clean == ".." {
			return fmt.Errorf("initramfs: bad module path %q: want a clean path relative to the kernel directory, like modules/kernel/drivers/virtio/virtio_mmio.ko", m)
		}
		if strings.ContainsAny(m, "\n\x00") {
			return fmt.Errorf("initramfs: bad module path %q: contains a newline or NUL", m)
		}
		if seen[m] {
			return fmt.Errorf("initramfs: module %q listed twice", m)
		}
		seen[m] = true
	}
	return nil
}

// Ensure returns the path of the initramfs for this banger-init binary and
// module list in kernelDir, building it if it is not there yet. The name
// <kernelDir>/initramfs-<hash>.img changes with the binary's bytes, the
// modules' bytes and the list order, so a new banger-init is picked up on the
// next boot. Concurrent calls are safe: each builds into its own temp file
// and the rename is atomic; identical inputs give identical bytes.
func Ensure(ctx context.Context, initBinary, kernelDir string, modules []string) (string, error) {
	if err := checkModules(modules); err != nil {
		return "", err
	}
	sum, err := cachedHash(initBinary, kernelDir, modules)
	if err != nil {
		return "", err
	}
	out := filepath.Join(kernelDir, "initramfs-"+sum[:16]+".img")
	if st, err := os.Stat(out); err == nil && st.Mode().IsRegular() {
		return out, nil
	}
	if err := Build(ctx, initBinary, kernelDir, modules, out); err != nil {
		return "", err
	}
	return out, nil
}

// hashCache remembers hashInputs' answer for inputs whose files have
// not changed since (same inode, size, mtime, ctime): hashing banger-init
// and the modules was most of a start's host-side time, for an answer
// that changes only when banger is rebuilt or a kernel re-pulled.
var hashCache struct {
	sync.Mutex
	m map[string]hashEntry
}

type hashEntry struct {
	stamp string
	sum   string
}

// cachedHash is hashInputs, remembered by the inputs' stat stamps.
func cachedHash(initBinary, kernelDir string, modules []string) (string, error) {
	key := initBinary + "\x00" + kernelDir + "\x00" + strings.Join(modules, "\x00")
	var stamp strings.Builder
	for _, p := range append([]string{initBinary}, modules...) {
		src := p
		if p != initBinary {
			src = filepath.Join(kernelDir, filepath.FromSlash(p))
		}
		var st syscall.Stat_t
		if err := syscall.Stat(src, &st); err != nil {
			return "", fmt.Errorf("initramfs: %w", &os.PathError{Op: "stat", Path: src, Err: err})
		}
		fmt.Fprintf(&stamp, "%d:%d:%d:%d.%d:%d.%d;", st.Dev, st.Ino, st.Size, st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec)
	}
	hashCache.Lock()
	e, ok := hashCache.m[key]
	hashCache.Unlock()
	if ok && e.stamp == stamp.String() {
		return e.sum, nil
	}
	sum, err := hashInputs(initBinary, kernelDir, modules)
	if err != nil {
		return "", err
	}
	hashCache.Lock()
	if hashCache.m == nil {
		hashCache.m = map[string]hashEntry{}
	}
	hashCache.m[key] = hashEntry{stamp.String(), sum}
	hashCache.Unlock()
	return sum, nil
}

func hashInputs(initBinary, kernelDir string, modules []string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n", formatVersion)
	for _, p := range append([]string{initBinary}, modules...) {
		src := p
		if p != initBinary {
			src = filepath.Join(kernelDir, filepath.FromSlash(p))
			fmt.Fprintf(h, "module %s\n", p)
		}
		f, err := os.Open(src)
		if err != nil {
			return "", fmt.Errorf("initramfs: %w", err)
		}
		n, err := io.Copy(h, f)
		f.Close()
		if err != nil {
			return "", fmt.Errorf("initramfs: read %s: %w", src, err)
		}
		fmt.Fprintf(h, "\n%d\n", n)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Install locations searched by LocateInit after the directory of the running
// executable.
var initSearchPath = []string{"/usr/local/lib/banger/banger-init", "/usr/lib/banger/banger-init"}

// LocateInit finds the banger-init binary: $BANGER_INIT if set (an explicit
// override wins), else "banger-init" next to the running executable, else
// /usr/local/lib/banger/banger-init, else /usr/lib/banger/banger-init.
func LocateInit() (string, error) {
	if p := os.Getenv("BANGER_INIT"); p != "" {
		if err := usable(p); err != nil {
			return "", fmt.Errorf("BANGER_INIT=%s: %w", p, err)
		}
		return p, nil
	}
	var tried []string
	if exe, err := os.Executable(); err == nil {
		if exe, err = filepath.EvalSymlinks(exe); err == nil {
			p := filepath.Join(filepath.Dir(exe), "banger-init")
			if usable(p) == nil {
				return p, nil
			}
			tried = append(tried, p)
		}
	}
	for _, p := range initSearchPath {
		if usable(p) == nil {
			return p, nil
		}
		tried = append(tried, p)
	}
	return "", fmt.Errorf("banger-init not found (looked at %s): run `make build`, which builds it next to banger, or set BANGER_INIT to its path",
		strings.Join(tried, ", "))
}

func usable(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return errors.New("not a regular file")
	}
	return nil
}
