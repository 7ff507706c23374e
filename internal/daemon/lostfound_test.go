package daemon

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/api"
)

// A lost banger.db next to a VM's directory: the daemon refuses to start
// (naming --reset) and touches nothing; --reset moves the directory to
// lost+found with its work disk intact. A directory no row claims while
// the store is there also goes to lost+found, never away.
func TestLostStoreKeepsVMDirs(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.StateDir, cfg.RuntimeDir, cfg.BridgeIP, cfg.DefaultImage = filepath.Join(dir, "state"), filepath.Join(dir, "run"), "10.200.0.1/24", "img"
	d, err := New(context.Background(), cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Serve(ctx); close(done) }()
	c := api.NewClient(d.cfg.Socket)
	for i := 0; i < 100 && c.Call(context.Background(), api.MethodPing, nil, nil) != nil; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	seedLocal(t, d)
	var vm api.VM
	if err := c.Call(context.Background(), api.MethodVMCreate, api.VMCreateParams{Name: "keep", NoStart: true}, &vm); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(vm.Dir, "user-data")
	if err := os.WriteFile(marker, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg = d.cfg
	stray := filepath.Join(cfg.StateDir, "vms", "0123456789abcdef-stray")
	if err := os.MkdirAll(stray, 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(stray, "root.ext4"), []byte("disk"), 0o600)
	cancel()
	<-done

	// With the store: the stray directory is moved, the VM's kept.
	d2, err := New(context.Background(), cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	d2.Close()
	if _, err := os.Stat(stray); !os.IsNotExist(err) {
		t.Errorf("stray dir still in vms/: %v", err)
	}
	if m, _ := filepath.Glob(filepath.Join(cfg.StateDir, lostFoundDir, "vm-0123456789abcdef-stray-*", "root.ext4")); len(m) != 1 {
		t.Errorf("stray dir not in lost+found: %v", m)
	}
	if b, err := os.ReadFile(marker); err != nil || string(b) != "precious" {
		t.Fatalf("the VM's own dir was touched: %v", err)
	}

	// Without the store: refused, nothing touched.
	for _, f := range []string{"banger.db", "banger.db-wal", "banger.db-shm"} {
		os.Remove(filepath.Join(cfg.StateDir, f))
	}
	if _, err := New(context.Background(), cfg, io.Discard); err == nil || !strings.Contains(err.Error(), "--reset") {
		t.Fatalf("start without banger.db: %v", err)
	}
	if b, err := os.ReadFile(marker); err != nil || string(b) != "precious" {
		t.Fatalf("refused start touched the VM dir: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.StateDir, "banger.db")); !os.IsNotExist(err) {
		t.Errorf("refused start created a store: %v", err)
	}

	// --reset: moved, intact.
	cfg.Reset = true
	d3, err := New(context.Background(), cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	d3.Close()
	m, _ := filepath.Glob(filepath.Join(cfg.StateDir, lostFoundDir, "vm-"+filepath.Base(vm.Dir)+"-*", "user-data"))
	if len(m) != 1 {
		t.Fatalf("VM dir not in lost+found: %v", m)
	}
	if b, _ := os.ReadFile(m[0]); string(b) != "precious" {
		t.Errorf("moved work data changed: %q", b)
	}
}

// The state dir is private even when an older version made it 0755; a
// runtime dir the daemon creates stays traversable for the socket.
func TestStateDirPrivate(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.StateDir, cfg.RuntimeDir, cfg.BridgeIP = filepath.Join(dir, "state"), filepath.Join(dir, "run"), "10.200.0.1/24"
	if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
		t.Fatal(err)
	}
	d, err := New(context.Background(), cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	for p, want := range map[string]os.FileMode{cfg.StateDir: 0o700, cfg.RuntimeDir: 0o755} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode().Perm(), want)
		}
	}
}

// An ELF file is not a kernel: importing /bin/true is refused and leaves
// no kernel behind.
func TestKernelImportRefusesNonKernelELF(t *testing.T) {
	d, c := startTestDaemon(t)
	err := c.Call(context.Background(), api.MethodKernelImport, api.KernelImportParams{Name: "x", Kernel: "/bin/true"}, nil)
	if !api.IsKind(err, api.KindInvalidArgument) || !strings.Contains(err.Error(), "not a Linux kernel") {
		t.Fatalf("import of /bin/true: %v", err)
	}
	if _, err := os.Stat(filepath.Join(d.cfg.StateDir, "kernels", "x")); !os.IsNotExist(err) {
		t.Errorf("a refused import left kernels/x: %v", err)
	}
}
