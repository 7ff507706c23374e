package kernelcat

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// BootModules are the modules a guest needs to boot banger's contract:
// virtio transports and devices, the agent channel (virtio_console or vsock),
// the overlay root and ext4. Their dependencies are added from each module's
// .modinfo; modules built into the kernel (modules.builtin) are skipped.
var BootModules = []string{
	"virtio_mmio",
	"virtio_pci",
	"virtio_blk",
	"virtio_net",
	"virtio_console",
	"vsock",
	"vmw_vsock_virtio_transport_common",
	"vmw_vsock_virtio_transport",
	"overlay",
	"ext4",
}

// OptionalBootModules are loaded at boot when the kernel has them, and
// skipped when it has not: virtio_balloon takes free page reports
// (vmm.Spec.Balloon), which a guest without it simply does not send.
var OptionalBootModules = []string{"virtio_balloon"}

// modInfo is one module found in a module tree.
type modInfo struct {
	name    string   // canonical: '-' folded to '_'
	path    string   // absolute path of the (maybe compressed) file
	rel     string   // path relative to the tree root, without .xz/.zst
	depends []string // hard deps from depends=
	softPre []string // softdep pre: modules (best effort)
}

// modTree is an index of a lib/modules/<release>-like directory.
type modTree struct {
	byName  map[string]*modInfo
	builtin map[string]bool
}

func modName(file string) string {
	base := filepath.Base(file)
	for _, suf := range []string{".xz", ".zst", ".gz"} {
		base = strings.TrimSuffix(base, suf)
	}
	base = strings.TrimSuffix(base, ".ko")
	return strings.ReplaceAll(base, "-", "_")
}

func isModuleFile(name string) bool {
	return strings.HasSuffix(name, ".ko") || strings.HasSuffix(name, ".ko.xz") || strings.HasSuffix(name, ".ko.zst")
}

// indexModules walks root for .ko/.ko.xz/.ko.zst files and reads
// modules.builtin when present. Symlinks are not followed.
func indexModules(root string) (*modTree, error) {
	t := &modTree{byName: map[string]*modInfo{}, builtin: map[string]bool{}}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() || !isModuleFile(d.Name()) {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = strings.TrimSuffix(strings.TrimSuffix(rel, ".xz"), ".zst")
		name := modName(p)
		if prev, ok := t.byName[name]; ok {
			return fmt.Errorf("module %q found twice: %s and %s", name, prev.path, p)
		}
		t.byName[name] = &modInfo{name: name, path: p, rel: rel}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("index modules in %s: %w", root, err)
	}
	if f, err := os.Open(filepath.Join(root, "modules.builtin")); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if line := strings.TrimSpace(sc.Text()); line != "" {
				t.builtin[modName(line)] = true
			}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("read modules.builtin: %w", err)
		}
	}
	return t, nil
}

// readModule returns a module's plain ELF bytes, decompressing .xz/.zst.
func readModule(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = f
	switch {
	case strings.HasSuffix(path, ".xz"):
		xr, err := xz.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("decompress %s: %w", path, err)
		}
		r = xr
	case strings.HasSuffix(path, ".zst"):
		zr, err := zstd.NewReader(f, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("decompress %s: %w", path, err)
		}
		defer zr.Close()
		r = zr
	}
	data, err := io.ReadAll(io.LimitReader(r, 256<<20))
	if err != nil {
		return nil, fmt.Errorf("read module %s: %w", path, err)
	}
	if !IsELF(data) {
		return nil, fmt.Errorf("module %s is not an ELF object", path)
	}
	return data, nil
}

// parseModinfo reads depends= and softdep= from the .modinfo section, which
// is how modprobe learns dependencies when no modules.dep exists (Debian's
// kernel packages ship none: depmod runs at install time).
func parseModinfo(data []byte) (name string, depends, softPre []string, err error) {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return "", nil, nil, fmt.Errorf("parse ELF: %w", err)
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return "", nil, nil, nil
	}
	raw, err := sec.Data()
	if err != nil {
		return "", nil, nil, fmt.Errorf("read .modinfo: %w", err)
	}
	for _, kv := range bytes.Split(raw, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		switch k {
		case "name":
			name = strings.ReplaceAll(v, "-", "_")
		case "depends":
			for _, d := range strings.Split(v, ",") {
				if d = strings.TrimSpace(d); d != "" {
					depends = append(depends, strings.ReplaceAll(d, "-", "_"))
				}
			}
		case "softdep":
			// "pre: a b post: c"
			pre := false
			for _, w := range strings.Fields(v) {
				switch w {
				case "pre:":
					pre = true
				case "post:":
					pre = false
				default:
					if pre {
						softPre = append(softPre, strings.ReplaceAll(w, "-", "_"))
					}
				}
			}
		}
	}
	return name, depends, softPre, nil
}

// load fills in a module's dependencies (once).
func (t *modTree) load(m *modInfo) error {
	if m.depends != nil || m.softPre != nil {
		return nil
	}
	data, err := readModule(m.path)
	if err != nil {
		return err
	}
	_, deps, soft, err := parseModinfo(data)
	if err != nil {
		return fmt.Errorf("module %s: %w", m.path, err)
	}
	m.depends, m.softPre = append([]string{}, deps...), append([]string{}, soft...)
	return nil
}

// order returns the modules reachable from roots, dependencies first, in a
// deterministic DFS post-order. A root or hard dependency that is neither a
// module file nor builtin is an error naming it; a missing soft dependency
// is skipped (modprobe treats softdeps as optional too).
func (t *modTree) order(roots []string) ([]*modInfo, error) {
	var out []*modInfo
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name, from string, soft bool) error
	visit = func(name, from string, soft bool) error {
		if state[name] == 2 {
			return nil
		}
		if state[name] == 1 {
			if soft {
				return nil
			}
			return fmt.Errorf("module dependency cycle through %q", name)
		}
		m, ok := t.byName[name]
		if !ok {
			if t.builtin[name] || soft {
				return nil
			}
			if from == "" {
				return fmt.Errorf("kernel has no module %q and does not list it in modules.builtin", name)
			}
			return fmt.Errorf("module %q depends on %q, which is neither a module file nor in modules.builtin", from, name)
		}
		state[name] = 1
		if err := t.load(m); err != nil {
			return err
		}
		for _, d := range m.softPre {
			if err := visit(d, name, true); err != nil {
				return err
			}
		}
		for _, d := range m.depends {
			if err := visit(d, name, false); err != nil {
				return err
			}
		}
		state[name] = 2
		out = append(out, m)
		return nil
	}
	for _, r := range roots {
		if err := visit(r, "", false); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// allNames lists every indexed module, sorted, for "load everything" trees.
func (t *modTree) allNames() []string {
	names := make([]string, 0, len(t.byName))
	for n := range t.byName {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
