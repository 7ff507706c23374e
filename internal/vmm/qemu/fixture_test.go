package qemu

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"banger/internal/testenv"
)

// Fixtures for booting real VMs: Debian's cloud kernel (virtio drivers are
// modules) and a busybox initramfs written by the test.

const fixtureDir = "/tmp/banger-fixtures/kernel"

type kernelFixture struct {
	vmlinuz string // bzImage
	modDir  string // lib/modules/<release>
}

// cloudKernel returns Debian's linux-image-cloud-amd64, fetched once with
// apt-get download (mirrors from the host's apt config) and cached under
// fixtureDir/root. It skips the test (fails it under CI) when apt-get or
// dpkg-deb is absent or the download fails.
func cloudKernel(t *testing.T) kernelFixture {
	t.Helper()
	testenv.RequireTool(t, "apt-get", "apt-cache", "dpkg-deb")
	if err := os.MkdirAll(fixtureDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Other test binaries may fetch at the same time: serialize on a lock.
	lock, err := os.OpenFile(filepath.Join(fixtureDir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(fixtureDir, "root")
	if kf, ok := findKernel(root); ok {
		return kf
	}
	debs, _ := filepath.Glob(filepath.Join(fixtureDir, "linux-image-*-cloud-amd64_*.deb"))
	if len(debs) == 0 {
		out, err := exec.Command("apt-cache", "depends", "linux-image-cloud-amd64").CombinedOutput()
		if err != nil {
			testenv.Skip(t, "apt-cache depends linux-image-cloud-amd64: %v: %s", err, out)
		}
		var pkg string
		for _, l := range strings.Split(string(out), "\n") {
			if f := strings.Fields(l); len(f) == 2 && f[0] == "Depends:" && strings.HasPrefix(f[1], "linux-image-") {
				pkg = f[1]
			}
		}
		if pkg == "" {
			testenv.Skip(t, "no linux-image dependency in: %s", out)
		}
		cmd := exec.Command("apt-get", "download", pkg)
		cmd.Dir = fixtureDir
		if out, err := cmd.CombinedOutput(); err != nil {
			testenv.Skip(t, "apt-get download %s: %v: %s", pkg, err, out)
		}
		debs, _ = filepath.Glob(filepath.Join(fixtureDir, "linux-image-*-cloud-amd64_*.deb"))
		if len(debs) == 0 {
			t.Fatalf("apt-get download %s left no .deb in %s", pkg, fixtureDir)
		}
	}
	tmp, err := os.MkdirTemp(fixtureDir, "extract-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	if out, err := exec.Command("dpkg-deb", "-x", debs[0], tmp).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -x %s: %v: %s", debs[0], err, out)
	}
	if err := os.Rename(tmp, root); err != nil {
		t.Fatal(err)
	}
	kf, ok := findKernel(root)
	if !ok {
		t.Fatalf("no boot/vmlinuz-* and lib/modules/* in %s", root)
	}
	return kf
}

func findKernel(root string) (kernelFixture, bool) {
	k, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	m, _ := filepath.Glob(filepath.Join(root, "lib", "modules", "*"))
	if len(k) == 0 || len(m) == 0 {
		return kernelFixture{}, false
	}
	return kernelFixture{vmlinuz: k[0], modDir: m[0]}, true
}

// modules returns the .ko paths for names and everything they depend on,
// in load order. Debian's package has no modules.dep (depmod runs at
// install), so dependencies come from each module's .modinfo section.
func (kf kernelFixture) modules(t *testing.T, names ...string) []string {
	t.Helper()
	byName := map[string]string{}
	filepath.WalkDir(filepath.Join(kf.modDir, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".ko") {
			byName[modName(strings.TrimSuffix(d.Name(), ".ko"))] = p
		}
		return nil
	})
	var order []string
	seen := map[string]bool{}
	var visit func(n string, depth int)
	visit = func(n string, depth int) {
		n = modName(n)
		if seen[n] || depth > 32 {
			return
		}
		seen[n] = true
		p, ok := byName[n]
		if !ok {
			return // built in
		}
		for _, dep := range modDepends(t, p) {
			visit(dep, depth+1)
		}
		order = append(order, p)
	}
	for _, n := range names {
		visit(n, 0)
	}
	return order
}

func modName(s string) string { return strings.ReplaceAll(s, "-", "_") }

func modDepends(t *testing.T, path string) []string {
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("module %s: %v", path, err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil
	}
	data, err := sec.Data()
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok && len(v) > 0 {
			return strings.Split(string(v), ",")
		}
	}
	return nil
}

// initramfs writes a gzip'd newc cpio with /bin/busybox (busybox-static),
// the given modules under /m (loaded in order before init's script runs)
// and /init running script. It skips the test (fails it under CI) without
// a static busybox.
func initramfs(t *testing.T, mods []string, script string) string {
	t.Helper()
	bb := "/bin/busybox"
	out, err := exec.Command("file", "-L", bb).CombinedOutput()
	testenv.RequireFile(t, bb, "busybox-static")
	if err == nil && !bytes.Contains(out, []byte("statically linked")) && !bytes.Contains(out, []byte("static-pie")) {
		testenv.Skip(t, "%s is not static (%s): apt-get install busybox-static", bb, out)
	}
	var w cpioWriter
	w.dir("bin")
	w.dir("m")
	w.dir("dev")
	w.dir("proc")
	w.dir("sys")
	busybox, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	w.file("bin/busybox", 0o755, busybox)
	var load strings.Builder
	for i, m := range mods {
		b, err := os.ReadFile(m)
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("m/%02d-%s", i, filepath.Base(m))
		w.file(name, 0o644, b)
		fmt.Fprintf(&load, "$B insmod /%s || $B echo INSMOD-FAILED %s\n", name, filepath.Base(m))
	}
	init := "#!/bin/busybox sh\nB=/bin/busybox\n" +
		"$B mount -t proc proc /proc\n$B mount -t sysfs sys /sys\n$B mount -t devtmpfs dev /dev\n" +
		load.String() + script + "\n$B poweroff -f\n"
	w.file("init", 0o755, []byte(init))
	w.trailer()

	path := filepath.Join(t.TempDir(), "initramfs.gz")
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	zw.Write(w.buf.Bytes())
	zw.Close()
	if err := os.WriteFile(path, gz.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// cpioWriter writes the "newc" format the kernel unpacks.
type cpioWriter struct {
	buf bytes.Buffer
	ino int
}

func (w *cpioWriter) entry(name string, mode uint32, data []byte) {
	w.ino++
	nlink := 1
	if mode&0o040000 != 0 {
		nlink = 2
	}
	fmt.Fprintf(&w.buf, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		w.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
	w.buf.WriteString(name)
	w.buf.WriteByte(0)
	w.pad()
	w.buf.Write(data)
	w.pad()
}

func (w *cpioWriter) pad() {
	for w.buf.Len()%4 != 0 {
		w.buf.WriteByte(0)
	}
}

func (w *cpioWriter) dir(name string)                         { w.entry(name, 0o040755, nil) }
func (w *cpioWriter) file(name string, perm uint32, b []byte) { w.entry(name, 0o100000|perm, b) }
func (w *cpioWriter) trailer()                                { w.entry("TRAILER!!!", 0, nil) }
