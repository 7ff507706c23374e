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
	"banger/internal/store"
)

// A lost banger.db, and one recreated empty, next to VM directories: the
// daemon refuses naming --adopt and --reset and touches nothing; --adopt
// re-imports each VM whose manifest checks out as a stopped VM (same id,
// name, address, spec; its files untouched) and sets aside, never
// deletes, one whose manifest does not.
func TestAdoptReimportsVMDirs(t *testing.T) {
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
	var keep, bad api.VM
	if err := c.Call(context.Background(), api.MethodVMCreate, api.VMCreateParams{Name: "keep", NoStart: true, MemoryMiB: 384, NAT: true}, &keep); err != nil {
		t.Fatal(err)
	}
	if err := c.Call(context.Background(), api.MethodVMCreate, api.VMCreateParams{Name: "bad", NoStart: true}, &bad); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(keep.Dir, "root.ext4")
	if err := os.WriteFile(disk, []byte("precious work"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg = d.cfg
	cancel()
	<-done
	// bad's manifest claims another VM's id.
	os.WriteFile(filepath.Join(bad.Dir, manifestName), []byte(`{"id":"0000","name":"bad"}`), 0o600)

	dropStore := func() {
		for _, f := range []string{"banger.db", "banger.db-wal", "banger.db-shm"} {
			os.Remove(filepath.Join(cfg.StateDir, f))
		}
	}
	intact := func(when string) {
		t.Helper()
		if b, err := os.ReadFile(disk); err != nil || string(b) != "precious work" {
			t.Fatalf("%s: work disk %v %q", when, err, b)
		}
	}

	// Lost: refused, nothing touched.
	dropStore()
	if _, err := New(context.Background(), cfg, io.Discard); err == nil || !strings.Contains(err.Error(), "--adopt") || !strings.Contains(err.Error(), "--reset") {
		t.Fatalf("start without banger.db: %v", err)
	}
	intact("missing store")
	// Recreated empty: refused too (before, reconcile set the VMs aside).
	st, err := store.Open(context.Background(), cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	if _, err := New(context.Background(), cfg, io.Discard); err == nil || !strings.Contains(err.Error(), "--adopt") || !strings.Contains(err.Error(), "records no VM") {
		t.Fatalf("start with an empty banger.db: %v", err)
	}
	intact("empty store")
	if _, err := os.Stat(keep.Dir); err != nil {
		t.Fatalf("refused start moved the VM dir: %v", err)
	}

	// --adopt, on a lost store.
	dropStore()
	cfg.Adopt = true
	d2, err := New(context.Background(), cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	recs, err := d2.store.ListVMs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 {
		t.Fatalf("adopted %d VMs, want keep only: %+v", len(recs), recs)
	}
	r := recs[0]
	if r.ID != keep.ID || r.Name != "keep" || r.Runtime.GuestIP != keep.GuestIP || r.State != "stopped" || r.Spec.MemoryMiB != 384 || !r.Spec.NAT || r.Runtime.Dir != keep.Dir {
		t.Fatalf("adopted record %+v, want %+v", r, keep)
	}
	intact("adopted")
	if _, err := os.Stat(bad.Dir); !os.IsNotExist(err) {
		t.Errorf("unadoptable dir still in vms/: %v", err)
	}
	if m, _ := filepath.Glob(filepath.Join(cfg.StateDir, lostFoundDir, "vm-"+filepath.Base(bad.Dir)+"-*", manifestName)); len(m) != 1 {
		t.Errorf("unadoptable dir not in lost+found: %v", m)
	}
}
