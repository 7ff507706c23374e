package kernelcat

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"banger/internal/testenv"
)

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// testBundle is a kernel tarball: an ELF vmlinux, an initrd and modules
// where a depends on b (xz-compressed) and c (zstd-compressed, depends on b).
func testBundle(t *testing.T) (bundle, vmlinux []byte) {
	vmlinux = fakeVmlinux("9.9.9-test", 2<<20)
	bundle = tarGz(t, map[string][]byte{
		"vmlinux":                 vmlinux,
		"initrd":                  []byte("initrd bytes"),
		"modules/extra/a.ko":      fakeModule("a", "c", "b"),
		"modules/extra/b.ko.xz":   compressXZ(t, fakeModule("b")),
		"modules/extra/c.ko.zst":  compressZstd(t, fakeModule("c", "b")),
		"modules/extra/d-dash.ko": fakeModule("d_dash"),
		"System.map":              []byte("ignored"),
		"docs/README":             []byte("ignored"),
		"modules/extra/notes.txt": []byte("kept but not a module"),
	})
	return bundle, vmlinux
}

func TestFetchURLBundle(t *testing.T) {
	srv := newSlowServer(t)
	bundle, vmlinux := testBundle(t)
	e := Entry{Name: "k1", Source: Source{Type: SourceURL, URL: srv.put("/k1.tar.gz", bundle), SHA256: sha(bundle)}}
	dir := t.TempDir()
	var maxDone, lastTotal int64
	stages := map[string]bool{}
	m, err := Fetch(context.Background(), e, dir, func(stage, msg string, done, total int64) {
		stages[stage] = true
		if stage == "download" && done > maxDone {
			maxDone, lastTotal = done, total
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if maxDone != int64(len(bundle)) || lastTotal != int64(len(bundle)) {
		t.Fatalf("download progress reached %d/%d, want %d", maxDone, lastTotal, len(bundle))
	}
	for _, s := range []string{"download", "unpack", "modules", "publish", "done"} {
		if !stages[s] {
			t.Errorf("no %q progress", s)
		}
	}
	if m.Format != FormatELF || m.Kernel != "vmlinux" || m.Vmlinux != "vmlinux" || m.Release != "9.9.9-test" || m.Initrd != "initrd.img" {
		t.Fatalf("manifest %+v", m)
	}
	wantMods := []string{"modules/extra/b.ko", "modules/extra/c.ko", "modules/extra/a.ko", "modules/extra/d-dash.ko"}
	if !reflect.DeepEqual(m.Modules, wantMods) {
		t.Fatalf("modules %v, want %v (dependencies first)", m.Modules, wantMods)
	}
	for rel, sum := range m.Files {
		b, err := os.ReadFile(m.Path(dir, rel))
		if err != nil {
			t.Fatal(err)
		}
		if sha(b) != sum {
			t.Fatalf("%s: sha256 mismatch with manifest", rel)
		}
	}
	if b, _ := os.ReadFile(m.Path(dir, "vmlinux")); !bytes.Equal(b, vmlinux) {
		t.Fatal("vmlinux differs from the bundle's")
	}
	if b, _ := os.ReadFile(m.Path(dir, "modules/extra/b.ko")); !IsELF(b) {
		t.Fatal("b.ko.xz was not decompressed to a plain .ko")
	}
	got, err := ReadLocal(dir, "k1")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Modules, m.Modules) || got.Source != e.Source || got.SizeBytes != m.SizeBytes || got.SizeBytes == 0 {
		t.Fatalf("ReadLocal = %+v, want %+v", got, m)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("kernels dir holds %d entries, want just k1", len(ents))
	}

	// A second pull of the same name: fs.ErrExist, no download, nothing changes.
	before, gets := listing(t, dir), srv.gets.Load()
	_, err = Fetch(context.Background(), e, dir, nil)
	if !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), "already pulled") {
		t.Fatalf("second fetch err = %v", err)
	}
	if srv.gets.Load() != gets || !reflect.DeepEqual(listing(t, dir), before) {
		t.Fatal("second fetch downloaded or changed the kernels dir")
	}

	list, err := List(dir)
	if err != nil || len(list) != 1 || list[0].Name != "k1" {
		t.Fatalf("List = %v, %v", list, err)
	}
	if err := Remove(dir, "k1"); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadLocal(dir, "k1"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("after Remove: %v", err)
	}
	if err := Remove(dir, "k1"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("second Remove: %v", err)
	}
	if l := listing(t, dir); len(l) != 1 {
		t.Fatalf("Remove left %v", l)
	}
}

func TestFetchBareBzImage(t *testing.T) {
	vm := fakeVmlinux("8.8.8-bz", 1<<20)
	bz := fakeBzImage(compressZstd(t, vm), "8.8.8-bz", 0x20f, len(vm))
	srv := newSlowServer(t)
	dir := t.TempDir()
	m, err := Fetch(context.Background(), Entry{Name: "bz", Source: Source{Type: SourceURL, URL: srv.put("/bzImage", bz), SHA256: sha(bz)}}, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.Format != FormatBzImage || m.Kernel != "vmlinuz" || m.Vmlinux != "vmlinux" || m.Release != "8.8.8-bz" || len(m.Modules) != 0 {
		t.Fatalf("manifest %+v", m)
	}
	if b, _ := os.ReadFile(m.Path(dir, m.Vmlinux)); !bytes.Equal(b, vm) {
		t.Fatal("extracted vmlinux differs")
	}
	if b, _ := os.ReadFile(m.Path(dir, m.Kernel)); !bytes.Equal(b, bz) {
		t.Fatal("bzImage differs")
	}
}

// TestFetchFailures: each failure is a clear error and leaves kernelsDir
// exactly as it was (an existing kernel stays, no temp dir remains).
func TestFetchFailures(t *testing.T) {
	srv := newSlowServer(t)
	bundle, _ := testBundle(t)
	good := srv.put("/good.tar.gz", bundle)
	garbage := bytes.Repeat([]byte("not a tarball "), 5000)
	corruptGz := tarGz(t, map[string][]byte{"vmlinux": fakeVmlinux("1", 1<<20)})
	corruptGz = corruptGz[:len(corruptGz)/2] // truncated mid-stream
	gzNotTar := compressGzip(t, garbage)
	noKernel := tarGz(t, map[string][]byte{"modules/x.ko": fakeModule("x")})
	badDep := tarGz(t, map[string][]byte{"vmlinux": fakeVmlinux("1", 4096), "modules/x.ko": fakeModule("x", "missing_dep")})
	escape := tarGz(t, map[string][]byte{"../evil": []byte("x"), "vmlinux": fakeVmlinux("1", 4096)})
	notKernel := []byte(strings.Repeat("plain text, not a kernel\n", 100))
	srv.put("/corrupt.tar.gz", corruptGz)
	srv.put("/gznottar", gzNotTar)
	srv.put("/nokernel.tar.gz", noKernel)
	srv.put("/baddep.tar.gz", badDep)
	srv.put("/escape.tar.gz", escape)
	srv.put("/notkernel", notKernel)
	dead := "http://" + closedPort(t) + "/k.tar.gz"

	cases := []struct {
		name string
		src  Source
		ctx  func() (context.Context, context.CancelFunc)
		want string
	}{
		{"checksum mismatch", Source{Type: SourceURL, URL: good, SHA256: sha([]byte("other"))}, nil, "sha256 mismatch"},
		{"404", Source{Type: SourceURL, URL: srv.URL + "/missing.tar.gz", SHA256: sha(bundle)}, nil, "HTTP 404"},
		{"unreachable", Source{Type: SourceURL, URL: dead, SHA256: sha(bundle)}, nil, "connection refused"},
		{"truncated tar.gz", Source{Type: SourceURL, URL: srv.URL + "/corrupt.tar.gz", SHA256: sha(corruptGz)}, nil, "corrupt kernel bundle"},
		{"gzip but not tar", Source{Type: SourceURL, URL: srv.URL + "/gznottar", SHA256: sha(gzNotTar)}, nil, "corrupt kernel bundle"},
		{"bundle without kernel", Source{Type: SourceURL, URL: srv.URL + "/nokernel.tar.gz", SHA256: sha(noKernel)}, nil, "no vmlinux, bzImage or vmlinuz"},
		{"unresolvable module dep", Source{Type: SourceURL, URL: srv.URL + "/baddep.tar.gz", SHA256: sha(badDep)}, nil, `"missing_dep"`},
		{"entry escaping the bundle", Source{Type: SourceURL, URL: srv.URL + "/escape.tar.gz", SHA256: sha(escape)}, nil, `"../evil"`},
		{"not a kernel", Source{Type: SourceURL, URL: srv.URL + "/notkernel", SHA256: sha(notKernel)}, nil, "neither a kernel"},
		{"unpinned remote url", Source{Type: SourceURL, URL: "https://kernels.example/vmlinux"}, nil, "has no sha256"},
		{"timeout", Source{Type: SourceURL, URL: good, SHA256: sha(bundle)}, func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 50*time.Millisecond)
		}, "deadline exceeded"},
		{"missing file url", Source{Type: SourceURL, URL: "file:///nonexistent/banger/vmlinux"}, nil, "no such file"},
	}
	dir := t.TempDir()
	if _, err := Fetch(context.Background(), Entry{Name: "existing", Source: Source{Type: SourceURL, URL: good, SHA256: sha(bundle)}}, dir, nil); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := listing(t, dir)
			ctx, cancel := context.Background(), func() {}
			if c.ctx != nil {
				ctx, cancel = c.ctx()
			}
			defer cancel()
			_, err := Fetch(ctx, Entry{Name: "k2", Source: c.src}, dir, nil)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to contain %q", err, c.want)
			}
			if !strings.Contains(err.Error(), `"k2"`) {
				t.Errorf("error does not name the kernel: %v", err)
			}
			if after := listing(t, dir); !reflect.DeepEqual(before, after) {
				t.Fatalf("kernels dir changed:\nbefore %v\nafter  %v", before, after)
			}
			if _, err := ReadLocal(dir, "k2"); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("ReadLocal after failure: %v", err)
			}
		})
	}
}

// TestUnpinnedLoopbackAllowed: no sha256 is fine for loopback and file://.
func TestUnpinnedLoopbackAllowed(t *testing.T) {
	srv := newSlowServer(t)
	bundle, _ := testBundle(t)
	dir := t.TempDir()
	if _, err := Fetch(context.Background(), Entry{Name: "lo", Source: Source{Type: SourceURL, URL: srv.put("/lo.tar.gz", bundle)}}, dir, nil); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "k.tar.gz")
	os.WriteFile(p, bundle, 0o644)
	if _, err := Fetch(context.Background(), Entry{Name: "file", Source: Source{Type: SourceURL, URL: "file://" + p}}, dir, nil); err != nil {
		t.Fatal(err)
	}
}

// TestReadLocalDuringFetch: a reader polling ReadLocal while pulls run sees
// either "not pulled" or a complete, valid manifest, never anything else.
func TestReadLocalDuringFetch(t *testing.T) {
	srv := newSlowServer(t)
	bundle, _ := testBundle(t)
	url := srv.put("/k.tar.gz", bundle)
	dir := t.TempDir()
	for round := 0; round < 3; round++ {
		var stop atomic.Bool
		var notYet, complete atomic.Int64
		var readerErr error
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				m, err := ReadLocal(dir, "k")
				switch {
				case errors.Is(err, fs.ErrNotExist):
					notYet.Add(1)
				case err != nil:
					readerErr = err
					return
				case len(m.Modules) != 4 || m.Files["vmlinux"] == "" || m.Release != "9.9.9-test":
					readerErr = errors.New("incomplete manifest seen")
					return
				default:
					complete.Add(1)
				}
			}
		}()
		_, err := Fetch(context.Background(), Entry{Name: "k", Source: Source{Type: SourceURL, URL: url, SHA256: sha(bundle)}}, dir, nil)
		// Keep reading a little after publication.
		for i := 0; i < 1000 && complete.Load() == 0; i++ {
			time.Sleep(time.Millisecond)
		}
		stop.Store(true)
		wg.Wait()
		if err != nil {
			t.Fatal(err)
		}
		if readerErr != nil {
			t.Fatalf("reader: %v", readerErr)
		}
		if notYet.Load() == 0 || complete.Load() == 0 {
			t.Fatalf("reader never overlapped the pull: notYet=%d complete=%d", notYet.Load(), complete.Load())
		}
		t.Logf("round %d: %d reads before publication, %d after", round, notYet.Load(), complete.Load())
		if err := Remove(dir, "k"); err != nil {
			t.Fatal(err)
		}
	}
}

// TestConcurrentFetchSameName: without the daemon's lock two pulls may race;
// exactly one publishes and the other gets fs.ErrExist.
func TestConcurrentFetchSameName(t *testing.T) {
	srv := newSlowServer(t)
	bundle, _ := testBundle(t)
	url := srv.put("/k.tar.gz", bundle)
	dir := t.TempDir()
	errs := make([]error, 4)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = Fetch(context.Background(), Entry{Name: "k", Source: Source{Type: SourceURL, URL: url, SHA256: sha(bundle)}}, dir, nil)
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, fs.ErrExist):
			t.Fatalf("unexpected error: %v", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d pulls published, want 1", ok)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("kernels dir has %d entries, want 1", len(ents))
	}
}

func TestCleanupTemp(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, ".tmp-k-123", "modules"), 0o755)
	os.MkdirAll(filepath.Join(dir, ".tmp-rm-k-456"), 0o755)
	os.MkdirAll(filepath.Join(dir, "kept"), 0o755)
	if err := CleanupTemp(dir); err != nil {
		t.Fatal(err)
	}
	if l := listing(t, dir); !reflect.DeepEqual(l, []string{".", "kept"}) {
		t.Fatalf("after CleanupTemp: %v", l)
	}
	if err := CleanupTemp(filepath.Join(dir, "absent")); err != nil {
		t.Fatal(err)
	}
}

func TestImport(t *testing.T) {
	src := t.TempDir()
	vm := fakeVmlinux("7.7.7-imp", 1<<20)
	bz := fakeBzImage(compressGzip(t, vm), "7.7.7-imp", 0x20f, -1)
	os.WriteFile(filepath.Join(src, "bzImage"), bz, 0o644)
	os.WriteFile(filepath.Join(src, "initrd"), []byte("rd"), 0o644)
	// A lib/modules/<release> tree: only the boot closure is kept, builtins skipped.
	tree := filepath.Join(src, "lib", "modules", "7.7.7-imp")
	mods := map[string][]byte{
		"kernel/drivers/virtio/virtio.ko":                           fakeModule("virtio"),
		"kernel/drivers/virtio/virtio_ring.ko":                      fakeModule("virtio_ring"),
		"kernel/drivers/virtio/virtio_mmio.ko":                      fakeModule("virtio_mmio", "virtio", "virtio_ring"),
		"kernel/drivers/virtio/virtio_pci.ko":                       fakeModule("virtio_pci", "virtio", "virtio_ring"),
		"kernel/drivers/block/virtio_blk.ko":                        fakeModule("virtio_blk", "virtio", "virtio_ring"),
		"kernel/drivers/net/virtio_net.ko":                          fakeModule("virtio_net", "net_failover", "virtio", "virtio_ring"),
		"kernel/drivers/net/net_failover.ko":                        fakeModule("net_failover", "failover"),
		"kernel/net/core/failover.ko":                               fakeModule("failover"),
		"kernel/drivers/char/virtio_console.ko":                     fakeModule("virtio_console", "virtio", "virtio_ring"),
		"kernel/net/vmw_vsock/vsock.ko":                             fakeModule("vsock"),
		"kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko": fakeModule("vmw_vsock_virtio_transport_common", "vsock", "virtio"),
		"kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko":        fakeModule("vmw_vsock_virtio_transport", "vmw_vsock_virtio_transport_common", "virtio", "vsock"),
		"kernel/fs/overlayfs/overlay.ko":                            fakeModule("overlay"),
		"kernel/sound/unrelated.ko":                                 fakeModule("unrelated"),
		"modules.builtin":                                           []byte("kernel/fs/ext4/ext4.ko\n"),
	}
	for rel, b := range mods {
		p := filepath.Join(tree, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, b, 0o644)
	}
	dir := t.TempDir()
	m, err := Import(context.Background(), "imp", filepath.Join(src, "bzImage"), filepath.Join(src, "initrd"), filepath.Join(src, "lib", "modules"), dir)
	if err != nil {
		t.Fatal(err)
	}
	if m.Format != FormatBzImage || m.Release != "7.7.7-imp" || m.Source.Type != SourceImport || !strings.HasPrefix(m.Source.URL, "file:///") {
		t.Fatalf("manifest %+v", m)
	}
	pos := map[string]int{}
	for i, p := range m.Modules {
		pos[filepath.Base(p)] = i
	}
	if _, ok := pos["unrelated.ko"]; ok || len(m.Modules) != 13 {
		t.Fatalf("modules %v: want the 13 boot modules only", m.Modules)
	}
	for mod, deps := range map[string][]string{
		"virtio_mmio.ko":                {"virtio.ko", "virtio_ring.ko"},
		"virtio_net.ko":                 {"net_failover.ko", "failover.ko"},
		"vmw_vsock_virtio_transport.ko": {"vmw_vsock_virtio_transport_common.ko", "vsock.ko"},
	} {
		for _, d := range deps {
			if pos[d] >= pos[mod] {
				t.Fatalf("%s loads before its dependency %s: %v", mod, d, m.Modules)
			}
		}
	}
	if _, err := Import(context.Background(), "imp2", filepath.Join(src, "initrd"), "", "", dir); err == nil || !strings.Contains(err.Error(), "neither a bzImage") {
		t.Fatalf("import of a non-kernel: %v", err)
	}
	if l := listing(t, dir); len(l) != 1+len(listing(t, filepath.Join(dir, "imp"))) {
		t.Fatalf("failed import left files: %v", l)
	}
}

// TestFetchFullDisk pulls into a tiny tmpfs so a write fails with ENOSPC, a
// real full disk; the kernels dir must be left empty.
func TestFetchFullDisk(t *testing.T) {
	testenv.RequireRoot(t, "to mount a small tmpfs")
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=3m", "banger-test", mnt).CombinedOutput(); err != nil {
		testenv.Skip(t, "cannot mount tmpfs (no CAP_SYS_ADMIN here?): %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	vm := fakeVmlinux("1.0-full", 2<<20)
	bundle := tarGz(t, map[string][]byte{"vmlinux": vm})
	srv := newSlowServer(t)
	_, err := Fetch(context.Background(), Entry{Name: "full", Source: Source{Type: SourceURL, URL: srv.put("/full.tar.gz", bundle), SHA256: sha(bundle)}}, mnt, nil)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("err = %v, want ENOSPC", err)
	}
	if l := listing(t, mnt); !reflect.DeepEqual(l, []string{"."}) {
		t.Fatalf("full disk left %v", l)
	}
}

// TestFetchDebianDefault pulls the real default kernel through apt, the way
// the daemon does on a fresh host.
func TestFetchDebianDefault(t *testing.T) {
	if testing.Short() {
		t.Skip("downloads the Debian kernel package")
	}
	testenv.RequireTool(t, "apt-get")
	debianKernelRoot(t) // skips (fails under CI) when apt cannot download at all
	cat, err := LoadEmbedded()
	if err != nil {
		t.Fatal(err)
	}
	e, _ := cat.Lookup(DefaultKernel)
	dir := t.TempDir()
	start := time.Now()
	m, err := Fetch(context.Background(), e, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Fetch %s: %v, release %s, %d modules, %d bytes", e.Name, time.Since(start).Round(time.Millisecond), m.Release, len(m.Modules), m.SizeBytes)
	if m.Format != FormatBzImage || !strings.Contains(m.Release, "cloud-amd64") {
		t.Fatalf("manifest %+v", m)
	}
	vm, err := os.ReadFile(m.Path(dir, m.Vmlinux))
	if err != nil || !IsELF(vm) {
		t.Fatalf("vmlinux: %v", err)
	}
	if elfRelease(vm) != m.Release {
		t.Fatalf("vmlinux release %q != %q", elfRelease(vm), m.Release)
	}
	pos := map[string]int{}
	for i, p := range m.Modules {
		if !strings.HasPrefix(p, "modules/kernel/") || !strings.HasSuffix(p, ".ko") {
			t.Fatalf("module path %q", p)
		}
		pos[strings.TrimSuffix(filepath.Base(p), ".ko")] = i
	}
	for _, want := range []string{"virtio_mmio", "virtio_blk", "virtio_console", "vmw_vsock_virtio_transport", "overlay", "virtio_net"} {
		if _, ok := pos[want]; !ok {
			t.Fatalf("%s missing from %v", want, m.Modules)
		}
	}
	for mod, deps := range map[string][]string{
		"virtio_mmio":                {"virtio", "virtio_ring"},
		"virtio_blk":                 {"virtio", "virtio_ring"},
		"virtio_net":                 {"net_failover", "failover"},
		"vmw_vsock_virtio_transport": {"vmw_vsock_virtio_transport_common", "vsock"},
	} {
		for _, d := range deps {
			p, ok := pos[d]
			if !ok || p >= pos[mod] {
				t.Fatalf("%s must load after %s: %v", mod, d, m.Modules)
			}
		}
	}
	if _, ok := pos["ext4"]; ok {
		t.Fatal("ext4 is builtin in this kernel and must not be listed")
	}
	t.Logf("modules: %v", m.Modules)
}
