package kernelcat

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ManifestFile is the name of the manifest inside a kernel dir. It is the
// last file written before the dir is published and is itself written to a
// temp file, fsynced and renamed.
const ManifestFile = "manifest.json"

// tempPrefix marks build and removal dirs under kernelsDir. Kernel names
// cannot start with '.', so these never collide with a kernel.
const tempPrefix = ".tmp-"

// Manifest describes a pulled kernel dir. File names are relative to
// kernels/<name>/.
type Manifest struct {
	Name    string `json:"name"`
	Source  Source `json:"source"`
	Release string `json:"release"`
	// Format is "elf" or "bzImage": what Kernel holds.
	Format string `json:"format"`
	// Kernel is the bootable image as pulled ("vmlinuz" for a bzImage,
	// "vmlinux" for an ELF).
	Kernel string `json:"kernel"`
	// Vmlinux is always an ELF kernel (Firecracker needs one); equal to
	// Kernel when Format is "elf".
	Vmlinux string `json:"vmlinux"`
	Initrd  string `json:"initrd,omitempty"`
	// Modules are the guest modules to load, dependencies first, as paths
	// like "modules/kernel/drivers/virtio/virtio_mmio.ko" (plain .ko).
	Modules []string `json:"modules"`
	// ModulesTree is the kernel's whole module tree as shipped (what was
	// lib/modules/<release>/: kernel/, modules.order, modules.builtin …),
	// "modules-tree" when kept. Empty for kernels without modules, for a
	// plain dir of .ko files (all of them are boot modules) and for kernels
	// pulled by a banger that kept only the boot closure.
	ModulesTree string `json:"modules_tree,omitempty"`
	// ModulesRelease is the release ModulesTree was indexed for (depmod's
	// version argument, the guest's /lib/modules/<release>; = Release).
	ModulesRelease string `json:"modules_release,omitempty"`
	// ModulesDisk is the read-only ext4 image of ModulesTree plus depmod's
	// indexes ("modules.ext4"), shared by every VM of this kernel. It is
	// derived, not pulled: EnsureModulesDisk rebuilds it when it is absent.
	ModulesDisk string `json:"modules_disk,omitempty"`
	// Files maps every pulled file in the dir to its sha256: everything but
	// manifest.json and the derived images (modules.ext4, initramfs-*.img).
	// Boot is how a VMM presents devices to this kernel: BootACPI ("",
	// virtio-mmio found through ACPI, e.g. Debian's cloud kernel) or
	// BootMMIO ("mmio": Firecracker-style, ACPI off, devices on the
	// command line, everything built in). Read from the kernel's config
	// for kernels banger builds.
	Boot string `json:"boot,omitempty"`
	// Build records how banger built a debsrc kernel: source package
	// version and the config fragment's hash (the build cache key).
	Build     *BuildInfo        `json:"build,omitempty"`
	Files     map[string]string `json:"files"`
	SizeBytes int64             `json:"size_bytes"`
	PulledAt  time.Time         `json:"pulled_at"`
}

// Dir is the directory a kernel lives in.
func Dir(kernelsDir, name string) string { return filepath.Join(kernelsDir, name) }

// Path joins a manifest-relative file name (Kernel, Vmlinux, a module) onto
// the kernel's dir.
func (m *Manifest) Path(kernelsDir, file string) string {
	return filepath.Join(kernelsDir, m.Name, filepath.FromSlash(file))
}

// ReadLocal reads kernels/<name>/manifest.json. A kernel that is not pulled
// gives an error for which errors.Is(err, fs.ErrNotExist) holds.
func ReadLocal(kernelsDir, name string) (*Manifest, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	path := filepath.Join(kernelsDir, name, ManifestFile)
	// Every start reads the manifest (twice); a kernel with its module
	// tree lists thousands of files, so the parsed manifest is kept while
	// the file is unchanged (it is only ever replaced by rename).
	var st syscall.Stat_t
	stamp := ""
	if syscall.Stat(path, &st) == nil {
		stamp = fmt.Sprintf("%d:%d:%d:%d.%d:%d.%d", st.Dev, st.Ino, st.Size, st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec)
		manifestCache.Lock()
		e, ok := manifestCache.m[path]
		manifestCache.Unlock()
		if ok && e.stamp == stamp {
			m := *e.m // callers get their own struct; Files and Modules are shared, read-only
			return &m, nil
		}
	}
	m, err := readLocal(path, name)
	if err == nil && stamp != "" {
		manifestCache.Lock()
		if manifestCache.m == nil {
			manifestCache.m = map[string]cachedManifest{}
		}
		c := *m
		manifestCache.m[path] = cachedManifest{stamp, &c}
		manifestCache.Unlock()
	}
	return m, err
}

var manifestCache struct {
	sync.Mutex
	m map[string]cachedManifest
}

type cachedManifest struct {
	stamp string
	m     *Manifest
}

func readLocal(path, name string) (*Manifest, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("kernel %q is not pulled (run: banger kernel pull %s): %w", name, name, err)
		}
		return nil, fmt.Errorf("read kernel %q: %w", name, err)
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("kernel %q: corrupt %s (remove it with: banger kernel rm %s): %w", name, ManifestFile, name, err)
	}
	if m.Name != name {
		return nil, fmt.Errorf("kernel %q: %s names kernel %q (remove it with: banger kernel rm %s)", name, ManifestFile, m.Name, name)
	}
	if m.Format != FormatELF && m.Format != FormatBzImage || m.Kernel == "" || m.Vmlinux == "" {
		return nil, fmt.Errorf("kernel %q: %s has format %q, kernel %q, vmlinux %q (remove it with: banger kernel rm %s)", name, ManifestFile, m.Format, m.Kernel, m.Vmlinux, name)
	}
	return &m, nil
}

// List reads every pulled kernel, sorted by name. Temp dirs are skipped. A
// kernel dir whose manifest cannot be read is left out and reported in the
// returned error (joined), next to the manifests that could be read.
func List(kernelsDir string) ([]*Manifest, error) {
	ents, err := os.ReadDir(kernelsDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list kernels: %w", err)
	}
	var out []*Manifest
	var errs []error
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		m, err := ReadLocal(kernelsDir, e.Name())
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, errors.Join(errs...)
}

// Remove deletes a pulled kernel. It first renames the dir to a temp name so
// a concurrent ReadLocal sees the whole kernel or none of it, never a dir
// half-way through RemoveAll.
func Remove(kernelsDir, name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	tmp := filepath.Join(kernelsDir, tempPrefix+"rm-"+name+"-"+randSuffix())
	if err := os.Rename(filepath.Join(kernelsDir, name), tmp); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("kernel %q is not pulled: %w", name, fs.ErrNotExist)
		}
		return fmt.Errorf("remove kernel %q: %w", name, err)
	}
	_ = syncDir(kernelsDir)
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("remove kernel %q (now at %s): %w", name, tmp, err)
	}
	return nil
}

// CleanupTemp removes build and removal leftovers (.tmp-*) that a killed
// daemon left behind. Call it at daemon start, before any pull runs: it
// would delete the temp dir of a pull in progress.
func CleanupTemp(kernelsDir string) error {
	ents, err := os.ReadDir(kernelsDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("clean kernel temp dirs: %w", err)
	}
	var errs []error
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tempPrefix) {
			if err := os.RemoveAll(filepath.Join(kernelsDir, e.Name())); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func randSuffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// writeManifest writes manifest.json via a sibling temp file, fsync, rename.
func writeManifest(dir string, m *Manifest) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	tmp := filepath.Join(dir, "."+ManifestFile+".tmp-"+randSuffix())
	if _, err := writeFileSync(tmp, data, 0o644); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, ManifestFile)); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(dir)
}

// writeFileSync creates path with data, fsyncs it and returns its sha256.
func writeFileSync(path string, data []byte, perm os.FileMode) (string, error) {
	return copyFileSync(path, bytes.NewReader(data), perm)
}

func copyFileSync(path string, r io.Reader, perm os.FileMode) (string, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(f, h), r); err != nil {
		f.Close()
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return "", fmt.Errorf("sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("close %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// renameNoReplace publishes a dir without ever replacing an existing one
// (plain rename(2) would replace an empty target dir).
func renameNoReplace(oldpath, newpath string) error {
	err := unix.Renameat2(unix.AT_FDCWD, oldpath, unix.AT_FDCWD, newpath, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) {
		// Filesystem without RENAME_NOREPLACE: check, then rename.
		if _, statErr := os.Lstat(newpath); statErr == nil {
			return fs.ErrExist
		}
		return os.Rename(oldpath, newpath)
	}
	if errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTEMPTY) {
		return fs.ErrExist
	}
	return err
}
