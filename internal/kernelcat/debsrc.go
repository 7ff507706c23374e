package kernelcat

// The debsrc source: a kernel banger builds itself from a Debian
// linux-source-* package and one of its embedded config fragments.
//
//	{"type": "debsrc", "package": "linux-source-6.1", "config": "microvm-6.1.config"}
//
// Steps (each a progress stage): resolve the package's candidate version
// (apt-cache policy), look the build up in the build cache, download the
// package (apt-get download, the host's apt sources, nothing installed),
// unpack its source tarball, configure (make tinyconfig, the fragment
// appended, make olddefconfig; every option of the fragment must survive),
// build (make -j<cpus> bzImage vmlinux, plus modules when the config has
// CONFIG_MODULES), then store bzImage, .config and the installed module
// tree in the cache. The pull publishes the cached bzImage like any other
// kernel, and the module tree like a deb kernel's (the modules disk).
//
// The build cache is keyed by the package, its version and the fragment's
// sha256: a second pull of the same inputs (after `kernel rm`, by another
// name, by another daemon sharing the cache) copies instead of building,
// and concurrent pulls of one key build once (an flock per key).

import (
	"bufio"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"time"
)

//go:embed configs/*.config
var configFS embed.FS

// buildFormat changes when the way a debsrc kernel is built changes (base
// config, make targets), so cached builds of an older banger are not reused.
const buildFormat = "banger-debsrc-v2"

// BuildInfo records how banger built a debsrc kernel (manifest "build").
type BuildInfo struct {
	Package string `json:"package"`
	Version string `json:"version"`
	Config  string `json:"config"`
	// ConfigSHA256 is the sha256 of the embedded fragment the build used.
	ConfigSHA256 string `json:"config_sha256"`
	// Key names the build cache entry: package, version and config hash.
	Key string `json:"key"`
	// Seconds the build took (0 when it came from the cache).
	BuildSeconds int  `json:"build_seconds"`
	Cached       bool `json:"cached"`
}

// Boot modes (Manifest.Boot): how a VMM must present devices to a kernel.
const (
	// BootACPI (the empty string): the kernel finds its virtio-mmio
	// devices through ACPI (Debian's cloud kernel).
	BootACPI = ""
	// BootMMIO: Firecracker-style: ACPI off, the virtio-mmio devices
	// announced on the command line (virtio_mmio.device=…), everything a
	// guest needs built in.
	BootMMIO = "mmio"
)

// ConfigNames lists the embedded config fragments.
func ConfigNames() []string {
	ents, _ := fs.ReadDir(configFS, "configs")
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// ConfigFragment returns an embedded config fragment by name.
func ConfigFragment(name string) ([]byte, error) {
	if !slices.Contains(ConfigNames(), name) {
		return nil, fmt.Errorf("no embedded kernel config %q (banger has: %s)", name, strings.Join(ConfigNames(), ", "))
	}
	return configFS.ReadFile("configs/" + name)
}

// buildTools are what a kernel build needs, with the Debian package that
// provides each (scripts/install-deps.sh installs them).
var buildTools = []struct{ tool, pkg string }{
	{"make", "make"}, {"gcc", "gcc"}, {"ld", "binutils"}, {"bc", "bc"},
	{"flex", "flex"}, {"bison", "bison"}, {"perl", "perl"}, {"tar", "tar"},
	{"xz", "xz-utils"}, {"apt-get", "apt"}, {"dpkg-deb", "dpkg"},
}

// buildHeaders are headers host programs of the build compile against.
var buildHeaders = []struct{ file, pkg string }{
	{"/usr/include/gelf.h", "libelf-dev"},        // objtool
	{"/usr/include/openssl/evp.h", "libssl-dev"}, // scripts/sign-file, certs
}

// lookPath and statFile are swapped in tests to fake a host without tools.
var (
	lookPath = exec.LookPath
	statFile = os.Stat
)

// CheckBuildTools reports every missing kernel build tool or header, with
// the command that installs them.
func CheckBuildTools() error {
	var missing, pkgs []string
	for _, t := range buildTools {
		if _, err := lookPath(t.tool); err != nil {
			missing = append(missing, t.tool)
			pkgs = append(pkgs, t.pkg)
		}
	}
	for _, h := range buildHeaders {
		if _, err := statFile(h.file); err != nil {
			missing = append(missing, h.file)
			pkgs = append(pkgs, h.pkg)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	slices.Sort(pkgs)
	return fmt.Errorf("building a kernel needs %s, missing here: install them with `apt-get install %s` (scripts/install-deps.sh does), or pull a kernel that needs no build (debian-cloud-amd64)",
		strings.Join(missing, ", "), strings.Join(slices.Compact(pkgs), " "))
}

// buildKey names a build cache entry.
func buildKey(pkg, version string, config []byte) (key, configSum string) {
	cs := sha256.Sum256(config)
	configSum = hex.EncodeToString(cs[:])
	h := sha256.Sum256([]byte(buildFormat + "\n" + pkg + "=" + version + "\n" + configSum + "\n"))
	return pkg + "-" + sanitizeVersion(version) + "-" + hex.EncodeToString(h[:])[:16], configSum
}

var versionUnsafe = regexp.MustCompile(`[^A-Za-z0-9.+-]`)

func sanitizeVersion(v string) string { return versionUnsafe.ReplaceAllString(v, "_") }

// candidateVersion asks apt for the version `apt-get download pkg` gets.
func candidateVersion(ctx context.Context, pkg string) (string, error) {
	cmd := exec.CommandContext(ctx, "apt-cache", "policy", pkg)
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("apt-cache policy %s: %w", pkg, err)
	}
	v := parseCandidate(string(out))
	if v == "" {
		return "", fmt.Errorf("package %s has no installable version in the host's apt sources (check them and run apt-get update)", pkg)
	}
	return v, nil
}

func parseCandidate(policy string) string {
	for _, l := range strings.Split(policy, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "Candidate:"); ok {
			v = strings.TrimSpace(v)
			if v == "(none)" {
				return ""
			}
			return v
		}
	}
	return ""
}

// cached build entry files.
const (
	cacheKernel  = "bzImage"
	cacheConfig  = "config"
	cacheInfo    = "build.json"
	cacheModules = "modules" // modules/<release>/, as modules_install lays it out
)

// installModules runs modules_install into a staging root and moves its
// lib/modules/<release> to dst/<release>. Stripped (INSTALL_MOD_STRIP):
// debug info would make the modules disk several times larger. The
// build/source links into the tree are dropped (the tree goes).
func installModules(ctx context.Context, tree, dst string) error {
	stage := dst + ".stage"
	defer os.RemoveAll(stage)
	if err := runStreaming(ctx, tree, nil, "make", "INSTALL_MOD_PATH="+stage, "INSTALL_MOD_STRIP=1", "modules_install"); err != nil {
		return fmt.Errorf("make modules_install: %w", err)
	}
	ents, err := os.ReadDir(filepath.Join(stage, "lib", "modules"))
	if err != nil || len(ents) != 1 {
		return fmt.Errorf("make modules_install: want one lib/modules/<release>, got %d entries (%v)", len(ents), err)
	}
	rel := filepath.Join(stage, "lib", "modules", ents[0].Name())
	for _, l := range []string{"build", "source"} {
		os.Remove(filepath.Join(rel, l))
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	return os.Rename(rel, filepath.Join(dst, ents[0].Name()))
}

// fetchDebSrc returns the bzImage built from src, from cacheDir when an
// identical build is there, else by building it (and storing it there).
// With no cacheDir the build is kept under work only.
func fetchDebSrc(ctx context.Context, src Source, work, cacheDir string, jobs int, progress Progress) (kernelParts, error) {
	config, err := ConfigFragment(src.Config)
	if err != nil {
		return kernelParts{}, err
	}
	progress("resolve", "apt-cache policy "+src.Package, 0, 0)
	version, err := candidateVersion(ctx, src.Package)
	if err != nil {
		return kernelParts{}, err
	}
	key, configSum := buildKey(src.Package, version, config)
	info := BuildInfo{Package: src.Package, Version: version, Config: src.Config, ConfigSHA256: configSum, Key: key}

	entry := filepath.Join(work, "build-out")
	if cacheDir != "" {
		if err := os.MkdirAll(cacheDir, 0o755); err != nil {
			return kernelParts{}, fmt.Errorf("kernel build cache: %w", err)
		}
		entry = filepath.Join(cacheDir, key)
		// One build per key across goroutines, daemons and CI jobs that
		// share the cache: the loser of the race waits, then copies.
		lock := filepath.Join(cacheDir, key+".lock")
		if f, err := os.OpenFile(lock, os.O_CREATE|os.O_RDONLY, 0o644); err == nil {
			f.Close()
		}
		progress("build_lock", "waiting for any other build of "+key, 0, 0)
		unlock, err := lockDir(ctx, lock)
		if err != nil {
			return kernelParts{}, err
		}
		defer unlock()
		if p, ok := readCachedBuild(entry); ok {
			p.build.Cached, p.build.BuildSeconds = true, 0
			progress("cached", "kernel build "+key+" from "+cacheDir, 0, 0)
			return p, nil
		}
	}
	if err := CheckBuildTools(); err != nil {
		return kernelParts{}, err
	}
	start := time.Now()
	tree, err := unpackSource(ctx, src.Package, version, work, progress)
	if err != nil {
		return kernelParts{}, err
	}
	final, err := configure(ctx, tree, config, progress)
	if err != nil {
		return kernelParts{}, err
	}
	if jobs <= 0 {
		jobs = runtime.NumCPU()
	}
	modules := final["CONFIG_MODULES"] == "y"
	if err := makeKernel(ctx, tree, jobs, modules, progress); err != nil {
		return kernelParts{}, err
	}
	info.BuildSeconds = int(time.Since(start).Seconds())
	progress("cache", "storing the build as "+entry, 0, 0)
	if err := storeBuild(ctx, tree, entry, info, modules); err != nil {
		return kernelParts{}, err
	}
	// The tree (~1 GB) goes now, not with the pull's work dir.
	os.RemoveAll(filepath.Dir(tree))
	p, ok := readCachedBuild(entry)
	if !ok {
		return kernelParts{}, fmt.Errorf("kernel build %s: stored build unreadable", entry)
	}
	return p, nil
}

// readCachedBuild reads a complete cache entry (published by rename, so a
// present build.json means a complete entry).
func readCachedBuild(entry string) (kernelParts, bool) {
	b, err := os.ReadFile(filepath.Join(entry, cacheInfo))
	if err != nil {
		return kernelParts{}, false
	}
	var info BuildInfo
	if json.Unmarshal(b, &info) != nil {
		return kernelParts{}, false
	}
	cfg, err := os.ReadFile(filepath.Join(entry, cacheConfig))
	if err != nil {
		return kernelParts{}, false
	}
	k := filepath.Join(entry, cacheKernel)
	if _, err := os.Stat(k); err != nil {
		return kernelParts{}, false
	}
	p := kernelParts{kernel: k, boot: bootModeOf(parseKconfig(string(cfg))), build: &info}
	if ents, err := os.ReadDir(filepath.Join(entry, cacheModules)); err == nil && len(ents) == 1 && ents[0].IsDir() {
		p.release = ents[0].Name()
		p.modRoot, p.closure = moduleRoot(filepath.Join(entry, cacheModules))
	}
	return p, true
}

func storeBuild(ctx context.Context, tree, entry string, info BuildInfo, modules bool) error {
	tmp, err := os.MkdirTemp(filepath.Dir(entry), ".tmp-"+filepath.Base(entry)+"-")
	if err != nil {
		return fmt.Errorf("kernel build cache: %w", err)
	}
	defer os.RemoveAll(tmp)
	if modules {
		if err := installModules(ctx, tree, filepath.Join(tmp, cacheModules)); err != nil {
			return err
		}
	}
	for dst, srcRel := range map[string]string{cacheKernel: "arch/x86/boot/bzImage", cacheConfig: ".config"} {
		b, err := os.ReadFile(filepath.Join(tree, srcRel))
		if err != nil {
			return fmt.Errorf("kernel build: %w", err)
		}
		if _, err := writeFileSync(filepath.Join(tmp, dst), b, 0o644); err != nil {
			return err
		}
	}
	ib, _ := json.MarshalIndent(info, "", "  ")
	if _, err := writeFileSync(filepath.Join(tmp, cacheInfo), append(ib, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	if modules { // the module files are durable before the entry is
		if err := syncFS(tmp); err != nil {
			return err
		}
	}
	os.RemoveAll(entry) // an incomplete entry (no build.json) from a crash
	if err := os.Rename(tmp, entry); err != nil {
		return fmt.Errorf("kernel build cache: %w", err)
	}
	return syncDir(filepath.Dir(entry))
}

// unpackSource downloads pkg=version and unpacks its source tarball,
// returning the kernel tree.
func unpackSource(ctx context.Context, pkg, version, work string, progress Progress) (string, error) {
	dl := filepath.Join(work, "dl")
	if err := os.MkdirAll(dl, 0o755); err != nil {
		return "", err
	}
	progress("download", "apt-get download "+pkg+"="+version, 0, -1)
	if err := runStreaming(ctx, dl, func(line string) { progress("download", line, 0, -1) },
		"apt-get", "download", "-q", pkg+"="+version); err != nil {
		return "", fmt.Errorf("apt-get download %s=%s: %w (check the host's apt sources and run apt-get update)", pkg, version, err)
	}
	debs, _ := filepath.Glob(filepath.Join(dl, "*.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("apt-get download %s produced %d .deb files, want 1", pkg, len(debs))
	}
	progress("unpack", "dpkg-deb -x "+filepath.Base(debs[0]), 0, 0)
	root := filepath.Join(work, "pkg")
	if err := runStreaming(ctx, "", nil, "dpkg-deb", "-x", debs[0], root); err != nil {
		return "", fmt.Errorf("unpack %s: %w", filepath.Base(debs[0]), err)
	}
	os.Remove(debs[0])
	tarballs, _ := filepath.Glob(filepath.Join(root, "usr", "src", "linux-source-*.tar.*"))
	if len(tarballs) != 1 {
		return "", fmt.Errorf("package %s holds %d usr/src/linux-source-*.tar.* files, want 1: not a kernel source package", pkg, len(tarballs))
	}
	srcDir := filepath.Join(work, "src")
	if err := os.Mkdir(srcDir, 0o755); err != nil {
		return "", err
	}
	progress("unpack", "tar -xf "+filepath.Base(tarballs[0]), 0, 0)
	if err := runStreaming(ctx, srcDir, nil, "tar", "-xf", tarballs[0]); err != nil {
		return "", fmt.Errorf("unpack %s: %w", filepath.Base(tarballs[0]), err)
	}
	os.RemoveAll(root)
	ents, err := os.ReadDir(srcDir)
	if err != nil {
		return "", err
	}
	if len(ents) != 1 || !ents[0].IsDir() {
		return "", fmt.Errorf("source tarball of %s unpacked to %d entries, want one directory", pkg, len(ents))
	}
	return filepath.Join(srcDir, ents[0].Name()), nil
}

// configure makes tree/.config and returns it parsed: tinyconfig, then the
// fragment (a later assignment in .config wins), then olddefconfig to
// settle dependencies.
// An option of the fragment that olddefconfig dropped (its dependencies are
// off) fails the build by name: silently missing virtio_blk would surface
// only as a guest that cannot find its disk.
func configure(ctx context.Context, tree string, fragment []byte, progress Progress) (map[string]string, error) {
	progress("configure", "make tinyconfig", 0, 0)
	if err := runStreaming(ctx, tree, nil, "make", "tinyconfig"); err != nil {
		return nil, fmt.Errorf("make tinyconfig: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(tree, ".config"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	_, err = f.Write(append([]byte("\n"), fragment...))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	progress("configure", "make olddefconfig", 0, 0)
	if err := runStreaming(ctx, tree, nil, "make", "olddefconfig"); err != nil {
		return nil, fmt.Errorf("make olddefconfig: %w", err)
	}
	b, err := os.ReadFile(filepath.Join(tree, ".config"))
	if err != nil {
		return nil, err
	}
	final := parseKconfig(string(b))
	if dropped := droppedOptions(parseKconfig(string(fragment)), final); len(dropped) > 0 {
		return nil, fmt.Errorf("kernel config: olddefconfig dropped %s (a dependency is off: add it to the fragment)", strings.Join(dropped, ", "))
	}
	return final, nil
}

// parseKconfig reads a .config (or fragment) into symbol → value; "is not
// set" lines give "n".
func parseKconfig(s string) map[string]string {
	out := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if sym, ok := strings.CutPrefix(l, "# "); ok {
			if sym, ok = strings.CutSuffix(sym, " is not set"); ok && strings.HasPrefix(sym, "CONFIG_") {
				out[sym] = "n"
			}
			continue
		}
		if k, v, ok := strings.Cut(l, "="); ok && strings.HasPrefix(k, "CONFIG_") {
			out[k] = v
		}
	}
	return out
}

// droppedOptions lists the fragment's assignments the final config does
// not hold, sorted.
func droppedOptions(fragment, final map[string]string) []string {
	var out []string
	for k, want := range fragment {
		got, ok := final[k]
		if !ok {
			got = "n"
		}
		if got != want {
			out = append(out, fmt.Sprintf("%s=%s (got %s)", k, want, got))
		}
	}
	slices.Sort(out)
	return out
}

// bootModeOf derives a kernel's boot mode from its config: everything a
// guest needs built in and virtio-mmio devices from the command line make
// it a Firecracker-style (mmio) kernel.
func bootModeOf(cfg map[string]string) string {
	for _, s := range []string{"CONFIG_VIRTIO_MMIO", "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES",
		"CONFIG_VIRTIO_BLK", "CONFIG_VIRTIO_NET", "CONFIG_VIRTIO_CONSOLE", "CONFIG_EXT4_FS", "CONFIG_OVERLAY_FS"} {
		if cfg[s] != "y" {
			return BootACPI
		}
	}
	return BootMMIO
}

// buildReportEvery spaces the build's progress lines: a build prints
// thousands of lines over many minutes.
const buildReportEvery = 30 * time.Second

// makeKernel runs the build, reporting how many output lines (about one
// per compiled file) it has printed and the latest, every
// buildReportEvery.
func makeKernel(ctx context.Context, tree string, jobs int, modules bool, progress Progress) error {
	targets := []string{"bzImage", "vmlinux"}
	if modules {
		targets = append(targets, "modules")
	}
	msg := fmt.Sprintf("make -j%d %s", jobs, strings.Join(targets, " "))
	progress("build", msg, 0, 0)
	n := 0
	last := time.Now()
	err := runStreaming(ctx, tree, func(line string) {
		n++
		if time.Since(last) >= buildReportEvery {
			last = time.Now()
			progress("build", fmt.Sprintf("%d steps: %s", n, line), 0, 0)
		}
	}, "make", append([]string{fmt.Sprintf("-j%d", jobs)}, targets...)...)
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		return fmt.Errorf("%s: %w", msg, err)
	}
	return nil
}
