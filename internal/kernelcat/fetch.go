package kernelcat

import (
	"archive/tar"
	"banger/internal/cmdrun"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Progress receives pull stages ("resolve", "download", "unpack",
// "extract_vmlinux", "modules", "modules_disk", "publish", "done"; a debsrc
// build adds "build_lock", "cached", "configure", "build" and "cache"), a
// message, and for "download" the bytes done and the total (-1 when
// unknown).
type Progress func(stage, msg string, done, total int64)

// httpClient has no overall timeout (kernels are big; the caller's ctx
// bounds the pull) but gives up on a server that never answers.
var httpClient = &http.Client{Transport: &http.Transport{
	Proxy:                 http.ProxyFromEnvironment,
	DialContext:           (&net.Dialer{Timeout: 30 * time.Second}).DialContext,
	TLSHandshakeTimeout:   30 * time.Second,
	ResponseHeaderTimeout: 60 * time.Second,
}}

// Fetch pulls a catalog entry into kernelsDir/<name>/. It builds in
// kernelsDir/.tmp-<name>-<random>/ and renames that into place only when
// complete; on any failure nothing is left under kernelsDir. If the kernel
// exists already the error wraps fs.ErrExist. Fetch does not serialize
// concurrent pulls of one name (the caller's per-name lock does); if two
// race anyway, exactly one publishes and the other gets fs.ErrExist.
func Fetch(ctx context.Context, e Entry, kernelsDir string, progress Progress) (*Manifest, error) {
	return FetchWith(ctx, e, kernelsDir, Options{}, progress)
}

// Options tune FetchWith.
type Options struct {
	// BuildCache keeps debsrc builds keyed by their inputs (see
	// debsrc.go); empty: no cache, every pull of a debsrc kernel builds.
	BuildCache string
	// Jobs is make's -j for debsrc builds (0: the number of CPUs).
	Jobs int
}

// FetchWith is Fetch with options.
func FetchWith(ctx context.Context, e Entry, kernelsDir string, o Options, progress Progress) (*Manifest, error) {
	if err := ValidateEntry(e); err != nil {
		return nil, err
	}
	if progress == nil {
		progress = func(string, string, int64, int64) {}
	}
	var obtain func(ctx context.Context, work string) (kernelParts, error)
	switch e.Source.Type {
	case SourceDeb:
		obtain = func(ctx context.Context, work string) (kernelParts, error) {
			return fetchDeb(ctx, e.Source.Package, work, progress)
		}
	case SourceDebSrc:
		obtain = func(ctx context.Context, work string) (kernelParts, error) {
			return fetchDebSrc(ctx, e.Source, work, o.BuildCache, o.Jobs, progress)
		}
	case SourceURL:
		if err := checkPinned(e); err != nil {
			return nil, err
		}
		obtain = func(ctx context.Context, work string) (kernelParts, error) {
			return fetchURL(ctx, e.Source, work, progress)
		}
	}
	m, err := build(ctx, e.Name, e.Source, kernelsDir, progress, obtain)
	if err != nil {
		return nil, fmt.Errorf("pull kernel %q: %w", e.Name, err)
	}
	return m, nil
}

// Import makes a kernel from local files: a bzImage or ELF kernel, an
// optional initrd, and an optional modules dir (a lib/modules/<release>
// tree, whose boot modules and their deps go into the initramfs and which is
// kept whole for the modules disk, or any dir of .ko files, all of which
// are boot modules).
func Import(ctx context.Context, name, kernelPath, initrdPath, modulesDir, kernelsDir string) (*Manifest, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	if kernelPath == "" {
		return nil, errors.New("import kernel: a kernel file is required")
	}
	abs, err := filepath.Abs(kernelPath)
	if err != nil {
		return nil, err
	}
	parts := kernelParts{kernel: abs, initrd: initrdPath}
	for _, p := range []string{kernelPath, initrdPath, modulesDir} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("import kernel %q: %w", name, err)
		}
	}
	if modulesDir != "" {
		parts.modRoot, parts.closure = moduleRoot(modulesDir)
	}
	src := Source{Type: SourceImport, URL: (&url.URL{Scheme: "file", Path: abs}).String()}
	m, err := build(ctx, name, src, kernelsDir, func(string, string, int64, int64) {},
		func(context.Context, string) (kernelParts, error) { return parts, nil })
	if err != nil {
		return nil, fmt.Errorf("import kernel %q: %w", name, err)
	}
	return m, nil
}

// checkPinned refuses to download an unpinned kernel from anywhere but the
// local machine: without a sha256 nothing vouches for what we boot.
func checkPinned(e Entry) error {
	if e.Source.SHA256 != "" {
		return nil
	}
	u, _ := url.Parse(e.Source.URL)
	if u.Scheme == "file" || isLoopbackHost(u.Hostname()) {
		return nil
	}
	return fmt.Errorf("kernel %q: url %s has no sha256; banger downloads unpinned kernels only from file:// or loopback URLs (add \"sha256\" to the catalog entry)", e.Name, e.Source.URL)
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// kernelParts is what a source produced, before assembly into the kernel dir.
type kernelParts struct {
	kernel  string // ELF or bzImage file
	initrd  string // optional
	modRoot string // optional module tree
	closure bool   // keep only BootModules and deps (else every module)
	release string // authoritative release (deb: lib/modules dir name)
	boot    string // Manifest.Boot
	build   *BuildInfo
}

func build(ctx context.Context, name string, src Source, kernelsDir string, progress Progress,
	obtain func(ctx context.Context, work string) (kernelParts, error)) (*Manifest, error) {
	if err := os.MkdirAll(kernelsDir, 0o755); err != nil {
		return nil, fmt.Errorf("create kernels dir: %w", err)
	}
	final := filepath.Join(kernelsDir, name)
	if _, err := os.Lstat(final); err == nil {
		return nil, alreadyPulled(name, final)
	}
	tmp, err := os.MkdirTemp(kernelsDir, tempPrefix+name+"-")
	if err != nil {
		return nil, fmt.Errorf("create temp dir: %w", err)
	}
	published := false
	defer func() {
		if !published {
			os.RemoveAll(tmp)
		}
	}()
	work := filepath.Join(tmp, ".work")
	if err := os.Mkdir(work, 0o700); err != nil {
		return nil, err
	}
	parts, err := obtain(ctx, work)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m, err := assemble(ctx, tmp, parts, progress)
	if err != nil {
		return nil, err
	}
	if err := os.RemoveAll(work); err != nil {
		return nil, err
	}
	m.Name, m.Source, m.PulledAt = name, src, time.Now().UTC()
	progress("publish", final, 0, 0)
	if err := writeManifest(tmp, m); err != nil {
		return nil, fmt.Errorf("write manifest: %w", err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return nil, err
	}
	if err := syncDir(tmp); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := renameNoReplace(tmp, final); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, alreadyPulled(name, final)
		}
		return nil, fmt.Errorf("publish %s: %w", final, err)
	}
	published = true
	if err := syncDir(kernelsDir); err != nil {
		return nil, err
	}
	progress("done", fmt.Sprintf("%s %s (%s)", name, m.Release, m.Format), m.SizeBytes, m.SizeBytes)
	return m, nil
}

func alreadyPulled(name, dir string) error {
	return fmt.Errorf("kernel %q already pulled at %s (remove it first with: banger kernel rm %s): %w", name, dir, name, fs.ErrExist)
}

// assemble writes the kernel, vmlinux, initrd and modules into dir and
// returns the manifest (without name, source and time).
func assemble(ctx context.Context, dir string, p kernelParts, progress Progress) (*Manifest, error) {
	w := &kernelWriter{dir: dir, m: &Manifest{Files: map[string]string{}, Modules: []string{}}}
	if err := w.addKernel(p.kernel, progress); err != nil {
		return nil, err
	}
	m := w.m
	if p.release != "" {
		m.Release = p.release
	}
	m.Boot, m.Build = p.boot, p.build
	if p.initrd != "" {
		b, err := os.ReadFile(p.initrd)
		if err != nil {
			return nil, fmt.Errorf("read initrd: %w", err)
		}
		m.Initrd = "initrd.img"
		if err := w.add(m.Initrd, b); err != nil {
			return nil, err
		}
	}
	if p.modRoot != "" {
		if err := w.addModules(ctx, p, progress); err != nil {
			return nil, err
		}
	}
	// Directory entries are durable only once their dirs are fsynced.
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		return syncDir(p)
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// kernelWriter writes a kernel directory's files and records them (with
// their checksums and sizes) in its manifest.
type kernelWriter struct {
	dir string
	m   *Manifest
}

func (w *kernelWriter) add(rel string, data []byte) error {
	full := filepath.Join(w.dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		return err
	}
	sum, err := writeFileSync(full, data, 0o644)
	if err != nil {
		return err
	}
	w.m.Files[rel] = sum
	w.m.SizeBytes += int64(len(data))
	return nil
}

// addKernel writes the kernel: a bzImage with the ELF vmlinux extracted
// from it (Firecracker boots only ELF), or an ELF vmlinux.
func (w *kernelWriter) addKernel(path string, progress Progress) error {
	m := w.m
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read kernel: %w", err)
	}
	switch {
	case IsBzImage(data):
		m.Format, m.Kernel, m.Vmlinux = FormatBzImage, "vmlinuz", "vmlinux"
		m.Release = bzImageRelease(data)
		if m.Release == "" {
			return fmt.Errorf("kernel file %s has a bzImage header but no kernel version string: not a Linux kernel", filepath.Base(path))
		}
		if err := w.add(m.Kernel, data); err != nil {
			return err
		}
		progress("extract_vmlinux", "decompressing the bzImage payload to an ELF vmlinux", 0, 0)
		elfData, err := ExtractVmlinux(data)
		if err != nil {
			return err
		}
		return w.add(m.Vmlinux, elfData)
	case IsELF(data):
		m.Format, m.Kernel, m.Vmlinux = FormatELF, "vmlinux", "vmlinux"
		m.Release = elfRelease(data)
		// An ELF file is not a kernel: /bin/true is one too.
		if m.Release == "" {
			return fmt.Errorf("kernel file %s is an ELF file without a \"Linux version\" banner: not a Linux kernel", filepath.Base(path))
		}
		return w.add(m.Kernel, data)
	default:
		return fmt.Errorf("kernel file %s is neither a bzImage (no \"HdrS\" at 0x202) nor an ELF vmlinux", filepath.Base(path))
	}
}

// addModules writes the modules the initramfs loads (the boot closure, or
// all of them) and, for a full tree, keeps the whole tree for the modules
// disk.
func (w *kernelWriter) addModules(ctx context.Context, p kernelParts, progress Progress) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t, err := indexModules(p.modRoot)
	if err != nil {
		return err
	}
	var roots []string
	switch {
	case !p.closure:
		roots = t.allNames()
	case p.boot == BootMMIO:
		// Everything a guest boots with is built in (bootModeOf): the
		// initramfs loads nothing, the tree is the modules disk's only.
	default:
		roots = slices.Clone(BootModules)
		for _, m := range OptionalBootModules {
			if _, ok := t.byName[m]; ok {
				roots = append(roots, m)
			}
		}
	}
	mods, err := t.order(roots)
	if err != nil {
		return fmt.Errorf("resolve guest modules: %w", err)
	}
	progress("modules", fmt.Sprintf("%d modules for the guest", len(mods)), 0, 0)
	for _, mod := range mods {
		b, err := readModule(mod.path)
		if err != nil {
			return err
		}
		rel := path.Join("modules", filepath.ToSlash(mod.rel))
		if err := w.add(rel, b); err != nil {
			return err
		}
		w.m.Modules = append(w.m.Modules, rel)
	}
	if b, err := os.ReadFile(filepath.Join(p.modRoot, "modules.builtin")); err == nil {
		if err := w.add("modules/modules.builtin", b); err != nil {
			return err
		}
	}
	if p.closure { // a full tree: keep all of it, for the modules disk
		return keepModuleTree(ctx, w.dir, p.modRoot, w.m, progress)
	}
	return nil
}

// moduleRoot finds the module tree inside dir: dir itself, or its only
// subdirectory (a lib/modules/ holding one <release>/). It reports whether
// this is a full kernel module tree (modules.builtin or modules.order
// present), from which only the boot closure is kept.
func moduleRoot(dir string) (string, bool) {
	full := func(d string) bool {
		for _, f := range []string{"modules.builtin", "modules.order"} {
			if _, err := os.Stat(filepath.Join(d, f)); err == nil {
				return true
			}
		}
		return false
	}
	if full(dir) {
		return dir, true
	}
	if ents, err := os.ReadDir(dir); err == nil && len(ents) == 1 && ents[0].IsDir() {
		sub := filepath.Join(dir, ents[0].Name())
		if full(sub) {
			return sub, true
		}
	}
	return dir, false
}

// fetchDeb resolves a (meta)package to its linux-image-* package, downloads
// it with the host's apt config and unpacks it.
func fetchDeb(ctx context.Context, pkg, work string, progress Progress) (kernelParts, error) {
	progress("resolve", "apt-cache depends "+pkg, 0, 0)
	real, err := resolveDebPackage(ctx, pkg)
	if err != nil {
		return kernelParts{}, err
	}
	dl := filepath.Join(work, "dl")
	if err := os.Mkdir(dl, 0o755); err != nil {
		return kernelParts{}, err
	}
	progress("download", "apt-get download "+real, 0, -1)
	// apt-get prints no byte counts: the total is the index's Size and
	// the bytes so far are what has landed in dl.
	total := debSize(ctx, real)
	stop := watchBytes(dl, debWatchInterval, func(n int64) { progress("download", real, n, total) })
	err = runStreaming(ctx, dl, func(line string) { progress("download", line, 0, -1) },
		"apt-get", "download", "-q", real)
	stop()
	if err != nil {
		return kernelParts{}, fmt.Errorf("apt-get download %s: %w (check the host's apt sources and run apt-get update)", real, err)
	}
	debs, _ := filepath.Glob(filepath.Join(dl, "*.deb"))
	if len(debs) != 1 {
		return kernelParts{}, fmt.Errorf("apt-get download %s produced %d .deb files, want 1", real, len(debs))
	}
	if st, err := os.Stat(debs[0]); err == nil {
		progress("download", real, st.Size(), st.Size())
	}
	root := filepath.Join(work, "root")
	progress("unpack", "dpkg-deb -x "+filepath.Base(debs[0]), 0, 0)
	if err := runStreaming(ctx, "", nil, "dpkg-deb", "-x", debs[0], root); err != nil {
		return kernelParts{}, fmt.Errorf("unpack %s: %w", filepath.Base(debs[0]), err)
	}
	if err := os.Remove(debs[0]); err != nil {
		return kernelParts{}, err
	}
	kernels, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(kernels) != 1 {
		return kernelParts{}, fmt.Errorf("package %s holds %d boot/vmlinuz-* files, want 1", real, len(kernels))
	}
	release := strings.TrimPrefix(filepath.Base(kernels[0]), "vmlinuz-")
	modRoot := ""
	for _, d := range []string{"lib/modules", "usr/lib/modules"} {
		cand := filepath.Join(root, d, release)
		if st, err := os.Stat(cand); err == nil && st.IsDir() {
			modRoot = cand
			break
		}
	}
	if modRoot == "" {
		return kernelParts{}, fmt.Errorf("package %s has no lib/modules/%s", real, release)
	}
	return kernelParts{kernel: kernels[0], modRoot: modRoot, closure: true, release: release}, nil
}

// resolveDebPackage follows a metapackage such as linux-image-cloud-amd64 to
// the versioned linux-image-* package it depends on; a package with no such
// dependency is taken as the kernel package itself.
func resolveDebPackage(ctx context.Context, pkg string) (string, error) {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "apt-cache", "depends", pkg)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("apt-cache depends %s: %w: %s (is the package in the host's apt sources? try apt-get update)", pkg, err, strings.TrimSpace(stderr.String()))
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && (f[0] == "Depends:" || f[0] == "|Depends:") && strings.HasPrefix(f[1], "linux-image-") {
			if !debPackageRE.MatchString(f[1]) {
				continue
			}
			return f[1], nil
		}
	}
	return pkg, nil
}

// runStreaming runs a command in dir, passing each output line to line (if
// set), and returns an error carrying the last lines of output.
func runStreaming(ctx context.Context, dir string, line func(string), name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	return cmdrun.Lines(ctx, cmd, line)
}

// fetchURL downloads, verifies and unpacks a url source.
func fetchURL(ctx context.Context, src Source, work string, progress Progress) (kernelParts, error) {
	blob := filepath.Join(work, "download")
	if err := download(ctx, src, blob, progress); err != nil {
		return kernelParts{}, err
	}
	progress("unpack", "", 0, 0)
	return unpackDownload(blob, filepath.Join(work, "bundle"))
}

// download fetches src.URL to dst and verifies its sha256 before anything
// else looks at the bytes.
func download(ctx context.Context, src Source, dst string, progress Progress) error {
	u, err := url.Parse(src.URL)
	if err != nil {
		return err
	}
	var body io.ReadCloser
	total := int64(-1)
	if u.Scheme == "file" {
		f, err := os.Open(u.Path)
		if err != nil {
			return fmt.Errorf("open %s: %w", src.URL, err)
		}
		if st, err := f.Stat(); err == nil {
			total = st.Size()
		}
		body = f
	} else {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, src.URL, nil)
		if err != nil {
			return err
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			return fmt.Errorf("download %s: %w (is the server up and the URL right?)", src.URL, err)
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return fmt.Errorf("download %s: HTTP %s (check the catalog entry's url)", src.URL, resp.Status)
		}
		total = resp.ContentLength
		body = resp.Body
	}
	defer body.Close()
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	pw := &progressWriter{report: func(n int64) { progress("download", src.URL, n, total) }}
	n, err := io.Copy(io.MultiWriter(f, h, pw), ctxReader{ctx, body})
	if err != nil {
		return fmt.Errorf("download %s: %w", src.URL, err)
	}
	if total >= 0 && n != total {
		return fmt.Errorf("download %s: got %d of %d bytes", src.URL, n, total)
	}
	progress("download", src.URL, n, total)
	if err := f.Sync(); err != nil {
		return fmt.Errorf("download %s: %w", src.URL, err)
	}
	got := hex.EncodeToString(h.Sum(nil))
	if src.SHA256 != "" && got != src.SHA256 {
		return fmt.Errorf("download %s: sha256 mismatch: got %s, catalog says %s (the file changed upstream or the catalog entry is wrong)", src.URL, got, src.SHA256)
	}
	return nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// progressWriter reports the running byte count about every 1 MiB.
type progressWriter struct {
	n, last int64
	report  func(int64)
}

func (p *progressWriter) Write(b []byte) (int, error) {
	p.n += int64(len(b))
	if p.n-p.last >= 1<<20 {
		p.last = p.n
		p.report(p.n)
	}
	return len(b), nil
}

// unpackDownload accepts a bare kernel (bzImage or ELF) or a tar / tar.gz
// bundle holding vmlinux or bzImage/vmlinuz, optional initrd, optional
// modules/.
func unpackDownload(blob, dir string) (kernelParts, error) {
	f, err := os.Open(blob)
	if err != nil {
		return kernelParts{}, err
	}
	defer f.Close()
	head := make([]byte, 1024)
	n, _ := io.ReadFull(f, head)
	head = head[:n]
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return kernelParts{}, err
	}
	switch {
	case IsBzImage(head) || IsELF(head):
		return kernelParts{kernel: blob}, nil
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(f)
		if err != nil {
			return kernelParts{}, fmt.Errorf("corrupt kernel bundle: %w", err)
		}
		return extractBundle(zr, dir)
	case len(head) >= 262 && string(head[257:262]) == "ustar":
		return extractBundle(f, dir)
	}
	return kernelParts{}, errors.New("downloaded file is neither a kernel (ELF vmlinux or bzImage) nor a tar/tar.gz bundle")
}

// bundle file roles by name at the bundle's top level.
func kernelRole(name string) string {
	switch {
	case name == "bzImage" || name == "vmlinuz" || strings.HasPrefix(name, "vmlinuz-"):
		return "bzimage"
	case name == "vmlinux" || strings.HasPrefix(name, "vmlinux-"):
		return "vmlinux"
	case name == "initrd" || name == "initrd.img" || name == "initramfs.img" ||
		strings.HasPrefix(name, "initrd.img-") || strings.HasPrefix(name, "initrd-"):
		return "initrd"
	}
	return ""
}

// extractBundle unpacks the files banger uses from a kernel tarball into dir.
// Only regular files are written; links and devices are skipped, and a name
// that would leave dir is an error, so nothing lands outside dir.
func extractBundle(r io.Reader, dir string) (kernelParts, error) {
	const maxBundle = 4 << 30
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return kernelParts{}, err
	}
	var parts kernelParts
	roles := map[string]string{}
	seen := map[string]bool{}
	var written int64
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return kernelParts{}, fmt.Errorf("corrupt kernel bundle: %w", err)
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "./"))
		if name == "." {
			continue
		}
		if path.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			return kernelParts{}, fmt.Errorf("kernel bundle entry %q points outside the bundle", h.Name)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		role := ""
		if !strings.Contains(name, "/") {
			role = kernelRole(name)
		} else if !strings.HasPrefix(name, "modules/") {
			continue
		}
		if role == "" && !strings.HasPrefix(name, "modules/") {
			continue
		}
		if seen[name] {
			return kernelParts{}, fmt.Errorf("kernel bundle has %q twice", name)
		}
		seen[name] = true
		if role != "" {
			if prev, ok := roles[role]; ok {
				return kernelParts{}, fmt.Errorf("kernel bundle has two %s files: %q and %q", role, prev, name)
			}
			roles[role] = name
		}
		written += h.Size
		if written > maxBundle {
			return kernelParts{}, fmt.Errorf("kernel bundle unpacks to more than %d bytes", int64(maxBundle))
		}
		dst := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return kernelParts{}, err
		}
		if _, err := copyFileSync(dst, tr, 0o644); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(err.Error(), "gzip") || strings.Contains(err.Error(), "flate") {
				return kernelParts{}, fmt.Errorf("corrupt kernel bundle: %w", err)
			}
			return kernelParts{}, err
		}
	}
	switch {
	case roles["bzimage"] != "":
		parts.kernel = filepath.Join(dir, roles["bzimage"])
	case roles["vmlinux"] != "":
		parts.kernel = filepath.Join(dir, roles["vmlinux"])
	default:
		return kernelParts{}, errors.New("kernel bundle holds no vmlinux, bzImage or vmlinuz at its top level")
	}
	if roles["initrd"] != "" {
		parts.initrd = filepath.Join(dir, roles["initrd"])
	}
	if st, err := os.Stat(filepath.Join(dir, "modules")); err == nil && st.IsDir() {
		parts.modRoot, parts.closure = moduleRoot(filepath.Join(dir, "modules"))
	}
	return parts, nil
}

// debWatchInterval is how often a deb download's bytes are reported.
const debWatchInterval = 500 * time.Millisecond

// debSize is the package's .deb size from apt's index ("Size:" of
// apt-cache show), or -1 (unknown) if apt does not say.
func debSize(ctx context.Context, pkg string) int64 {
	out, err := exec.CommandContext(ctx, "apt-cache", "show", "--no-all-versions", pkg).Output()
	if err != nil {
		return -1
	}
	return parseDebSize(out)
}

func parseDebSize(out []byte) int64 {
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "Size: "); ok {
			if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil && n > 0 {
				return n
			}
		}
	}
	return -1
}

// watchBytes calls report with the bytes of the regular files under dir
// every interval, when they changed, until the returned stop is called.
func watchBytes(dir string, interval time.Duration, report func(int64)) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(interval)
		defer t.Stop()
		var last int64
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			var n int64
			filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
				if err == nil && d.Type().IsRegular() {
					if info, err := d.Info(); err == nil {
						n += info.Size()
					}
				}
				return nil
			})
			if n != last {
				last = n
				report(n)
			}
		}
	}()
	return func() { close(done); <-finished }
}
