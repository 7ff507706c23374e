package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"banger/internal/guestproto"
)

// mountShares mounts the host directory shares of the command line
// (banger.share=) at every boot, after the modules disk is there: the
// virtiofs and 9p drivers are modules of the Debian cloud kernel. A share
// that fails is logged, not fatal: the guest stays reachable to say why.
func mountShares(cfg guestproto.Config) {
	for _, m := range cfg.Shares {
		if err := mountShare(m, cfg.Modules); err != nil {
			logf("share %s at %s: %v", m.Tag, m.Path, err)
			continue
		}
		logf("share %s mounted at %s (%s, %s)", m.Tag, m.Path, m.Transport, map[bool]string{true: "ro", false: "rw"}[m.ReadOnly])
	}
}

func mountShare(m guestproto.ShareMount, release string) error {
	fstype, data, mods := "virtiofs", "", []string{"virtiofs"}
	if m.Transport == guestproto.Share9p {
		// msize: 512 KiB messages instead of 8 KiB make large reads and
		// writes several times faster.
		fstype, data, mods = "9p", "trans=virtio,version=9p2000.L,msize=524288", []string{"9pnet_virtio", "9p"}
	}
	if !hasFilesystem(fstype) {
		for _, mod := range mods {
			if err := modprobe(guestproto.ModulesMountPoint(release), mod); err != nil {
				return fmt.Errorf("load %s: %w", mod, err)
			}
		}
	}
	flags := uintptr(unix.MS_NODEV)
	if m.ReadOnly {
		flags |= unix.MS_RDONLY
	}
	return mount(m.Tag, m.Path, fstype, flags, data)
}

func hasFilesystem(name string) bool {
	b, _ := os.ReadFile("/proc/filesystems")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[len(f)-1] == name {
			return true
		}
	}
	return false
}

// modprobe loads module name and its dependencies from dir (a
// /lib/modules/<release> tree with depmod's modules.dep): the image may
// have no modprobe of its own.
func modprobe(dir, name string) error {
	if dir == guestproto.ModulesMountPoint("") {
		return errors.New("no modules disk (banger.modules=) to load it from")
	}
	deps, err := readModulesDep(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return err
	}
	return loadWithDeps(dir, deps, modName(name), map[string]bool{})
}

func loadWithDeps(dir string, deps map[string][]string, name string, seen map[string]bool) error {
	if seen[name] {
		return nil
	}
	seen[name] = true
	line, ok := deps[name]
	if !ok {
		return fmt.Errorf("module %s not in %s/modules.dep", name, dir)
	}
	for _, d := range line[1:] {
		if err := loadWithDeps(dir, deps, modName(d), seen); err != nil {
			return err
		}
	}
	return loadModuleFile(filepath.Join(dir, line[0]))
}

// readModulesDep maps a module's name to its path followed by the paths
// of its dependencies.
func readModulesDep(path string) (map[string][]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string][]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		mod, deps, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		out[modName(mod)] = append([]string{mod}, strings.Fields(deps)...)
	}
	return out, sc.Err()
}

// modName is a module's name from its path: base name without .ko[.xz|.gz|.zst],
// '-' read as '_' (as the kernel does).
func modName(p string) string {
	b := filepath.Base(p)
	if i := strings.Index(b, ".ko"); i >= 0 {
		b = b[:i]
	}
	return strings.ReplaceAll(b, "-", "_")
}

// loadModuleFile loads one module file; a compressed one is handed to the
// kernel to decompress (MODULE_INIT_COMPRESSED_FILE).
func loadModuleFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	flags := 0
	if !strings.HasSuffix(path, ".ko") {
		flags = 4 // MODULE_INIT_COMPRESSED_FILE
	}
	err = unix.FinitModule(int(f.Fd()), "", flags)
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}
