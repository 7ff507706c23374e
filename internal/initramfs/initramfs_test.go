package initramfs

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"banger/internal/testenv"
)

type entry struct {
	mode       uint32
	rmaj, rmin uint32
	data       []byte
	order      int
}

// readCpio is an independent newc reader: it checks the magic, the 4-byte
// alignment and the trailer, which a writer bug would break.
func readCpio(t *testing.T, b []byte) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	off := 0
	field := func(i int) uint32 {
		v, err := strconv.ParseUint(string(b[off+6+8*i:off+6+8*i+8]), 16, 32)
		if err != nil {
			t.Fatalf("bad header field %d at %d: %v", i, off, err)
		}
		return uint32(v)
	}
	align := func(n int) int { return (n + 3) &^ 3 }
	for n := 0; ; n++ {
		if string(b[off:off+6]) != "070701" {
			t.Fatalf("bad magic at offset %d: %q", off, b[off:off+6])
		}
		mode, size, rmaj, rmin, namesize := field(1), field(6), field(9), field(10), field(11)
		name := string(b[off+110 : off+110+int(namesize)-1])
		if b[off+110+int(namesize)-1] != 0 {
			t.Fatalf("%s: name not NUL-terminated", name)
		}
		off = align(off + 110 + int(namesize))
		data := b[off : off+int(size)]
		off = align(off + int(size))
		if name == "TRAILER!!!" {
			if off != len(b) {
				t.Fatalf("%d bytes after trailer", len(b)-off)
			}
			return out
		}
		if _, dup := out[name]; dup {
			t.Fatalf("duplicate entry %s", name)
		}
		out[name] = entry{mode: mode, rmaj: rmaj, rmin: rmin, data: data, order: n}
	}
}

func fixture(t *testing.T) (initBin, kdir string, mods []string) {
	dir := t.TempDir()
	initBin = filepath.Join(dir, "banger-init")
	if err := os.WriteFile(initBin, []byte("#!init binary\x00\x01\x02"), 0o755); err != nil {
		t.Fatal(err)
	}
	kdir = filepath.Join(dir, "kernel")
	mods = []string{
		"modules/kernel/drivers/virtio/virtio.ko",
		"modules/kernel/drivers/virtio/virtio_mmio.ko",
		"modules/kernel/fs/overlayfs/overlay.ko",
	}
	for i, m := range mods {
		p := filepath.Join(kdir, m)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, bytes.Repeat([]byte{byte('a' + i)}, 1+i*3), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return initBin, kdir, mods
}

func gunzip(t *testing.T, path string) []byte {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBuildContents(t *testing.T) {
	initBin, kdir, mods := fixture(t)
	out := filepath.Join(t.TempDir(), "initramfs.img")
	if err := Build(context.Background(), initBin, kdir, mods, out); err != nil {
		t.Fatal(err)
	}
	raw := gunzip(t, out)
	ents := readCpio(t, raw)

	initData, _ := os.ReadFile(initBin)
	if e := ents["init"]; !bytes.Equal(e.data, initData) || e.mode != 0o100755 {
		t.Errorf("init: mode %o, %d bytes; want 100755 and the binary", e.mode, len(e.data))
	}
	if e := ents["dev/console"]; e.mode != 0o020600 || e.rmaj != 5 || e.rmin != 1 {
		t.Errorf("dev/console = %+v, want char 5:1", e)
	}
	for _, d := range []string{"proc", "sys", "run", "mnt/lower", "mnt/upper", "mnt/root", "etc/banger", "lib/modules/modules/kernel/fs"} {
		if ents[d].mode != 0o040755 {
			t.Errorf("dir %s: mode %o", d, ents[d].mode)
		}
	}
	var wantList string
	for _, m := range mods {
		want, _ := os.ReadFile(filepath.Join(kdir, m))
		e, ok := ents["lib/modules/"+m]
		if !ok || !bytes.Equal(e.data, want) {
			t.Errorf("module %s missing or wrong content", m)
		}
		if ents["lib/modules/modules/kernel"].order > e.order {
			t.Errorf("parent dir listed after %s", m)
		}
		wantList += "/lib/modules/" + m + "\n"
	}
	if got := string(ents["etc/banger/modules"].data); got != wantList {
		t.Errorf("modules list = %q, want %q", got, wantList)
	}

	// GNU cpio must read it too: that's roughly what the kernel's unpacker
	// accepts.
	if testenv.HaveTool(t, "cpio") {
		cmd := exec.Command("cpio", "-it", "--quiet")
		cmd.Stdin = bytes.NewReader(raw)
		listing, err := cmd.Output()
		if err != nil {
			t.Fatalf("cpio -it: %v", err)
		}
		names := strings.Fields(string(listing))
		if len(names) != len(ents) {
			t.Errorf("cpio -it lists %d entries, our reader %d", len(names), len(ents))
		}
		for _, n := range names {
			if _, ok := ents[n]; !ok {
				t.Errorf("cpio -it lists %q we did not write", n)
			}
		}
	}
}

func TestBuildDeterministic(t *testing.T) {
	initBin, kdir, mods := fixture(t)
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, p := range []string{a, b} {
		if err := Build(context.Background(), initBin, kdir, mods, p); err != nil {
			t.Fatal(err)
		}
	}
	ba, _ := os.ReadFile(a)
	bb, _ := os.ReadFile(b)
	if !bytes.Equal(ba, bb) {
		t.Fatal("two builds of the same inputs differ")
	}
}

func TestBuildErrorsLeaveNothing(t *testing.T) {
	initBin, kdir, mods := fixture(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "initramfs.img")
	cases := map[string][]string{
		"missing module": append(mods[:1:1], "modules/kernel/nope.ko"),
		"absolute":       {"/etc/passwd"},
		"escape":         {"../../etc/passwd"},
		"unclean":        {"modules//x.ko"},
		"duplicate":      {mods[0], mods[0]},
	}
	for name, m := range cases {
		err := Build(context.Background(), initBin, kdir, m, out)
		if err == nil {
			t.Errorf("%s: want error", name)
			continue
		}
		bad := m[len(m)-1]
		if !strings.Contains(err.Error(), bad) && !strings.Contains(err.Error(), filepath.Base(bad)) {
			t.Errorf("%s: error %q does not name %q", name, err, bad)
		}
	}
	if err := Build(context.Background(), filepath.Join(dir, "no-init"), kdir, mods, out); err == nil {
		t.Error("missing init binary: want error")
	}
	left, _ := os.ReadDir(dir)
	if len(left) != 0 {
		t.Errorf("failed builds left %v behind", left)
	}
}

func TestEnsureCachesAndRebuilds(t *testing.T) {
	initBin, kdir, mods := fixture(t)
	ctx := context.Background()

	// Concurrent first calls all succeed and agree.
	var wg sync.WaitGroup
	paths := make([]string, 4)
	errs := make([]error, 4)
	for i := range paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			paths[i], errs[i] = Ensure(ctx, initBin, kdir, mods)
		}()
	}
	wg.Wait()
	for i := range paths {
		if errs[i] != nil || paths[i] != paths[0] {
			t.Fatalf("Ensure %d: %q, %v (first: %q)", i, paths[i], errs[i], paths[0])
		}
	}
	p1 := paths[0]
	if filepath.Dir(p1) != kdir || !strings.HasPrefix(filepath.Base(p1), "initramfs-") {
		t.Fatalf("unexpected path %s", p1)
	}
	st1, _ := os.Stat(p1)

	// Same inputs: the cached file, untouched.
	p2, err := Ensure(ctx, initBin, kdir, mods)
	st2, _ := os.Stat(p2)
	if err != nil || p2 != p1 || !st2.ModTime().Equal(st1.ModTime()) {
		t.Fatalf("second Ensure rebuilt or moved: %s %v", p2, err)
	}

	// A new banger-init build: a new image carrying the new binary.
	if err := os.WriteFile(initBin, []byte("#!init binary v2"), 0o755); err != nil {
		t.Fatal(err)
	}
	p3, err := Ensure(ctx, initBin, kdir, mods)
	if err != nil || p3 == p1 {
		t.Fatalf("Ensure after init change: %s %v", p3, err)
	}
	if got := string(readCpio(t, gunzip(t, p3))["init"].data); got != "#!init binary v2" {
		t.Fatalf("rebuilt image has init %q", got)
	}

	// Module order is part of the key.
	rev := []string{mods[2], mods[1], mods[0]}
	p4, err := Ensure(ctx, initBin, kdir, rev)
	if err != nil || p4 == p3 {
		t.Fatalf("Ensure with reordered modules: %s %v", p4, err)
	}
	ents, _ := os.ReadDir(kdir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("temp file left: %s", e.Name())
		}
	}
}

func TestLocateInit(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "banger-init")
	os.WriteFile(p, []byte("x"), 0o755)
	t.Setenv("BANGER_INIT", p)
	if got, err := LocateInit(); err != nil || got != p {
		t.Fatalf("LocateInit with BANGER_INIT: %q %v", got, err)
	}
	t.Setenv("BANGER_INIT", filepath.Join(dir, "missing"))
	if _, err := LocateInit(); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("want error naming the bad BANGER_INIT, got %v", err)
	}
	t.Setenv("BANGER_INIT", "")
	old := initSearchPath
	initSearchPath = []string{filepath.Join(dir, "nope")}
	defer func() { initSearchPath = old }()
	// The test binary's directory has no banger-init.
	_, err := LocateInit()
	if err == nil || !strings.Contains(err.Error(), "make build") {
		t.Fatalf("want a hint to run make build, got %v", err)
	}
	initSearchPath = []string{p}
	if got, err := LocateInit(); err != nil || got != p {
		t.Fatalf("LocateInit via search path: %q %v", got, err)
	}
}
