package store

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"

	"banger/internal/model"
)

func openTest(t *testing.T) *Store {
	t.Helper()
	s, err := Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func vm(name, ip string) model.VMRecord {
	return model.VMRecord{ID: model.NewID(), Name: name, State: model.StateStopped,
		Spec: model.VMSpec{Image: "img", VCPU: 1, MemoryMiB: 128}, Runtime: model.VMRuntime{GuestIP: ip}}
}

func TestInsertGetExactName(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	if err := s.InsertVM(ctx, vm("web", "10.0.0.2")); err != nil {
		t.Fatal(err)
	}
	if err := s.InsertVM(ctx, vm("web-2", "10.0.0.3")); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetVMByName(ctx, "web")
	if err != nil || got.Name != "web" || got.Runtime.GuestIP != "10.0.0.2" {
		t.Fatalf("GetVMByName(web) = %+v, %v", got, err)
	}
	for _, name := range []string{"we", "web-", "WEB", "web%", "w_b"} {
		if _, err := s.GetVMByName(ctx, name); !errors.Is(err, ErrNotFound) {
			t.Errorf("GetVMByName(%q) err = %v, want not found", name, err)
		}
	}
}

func TestUniqueNameAndIP(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	if err := s.InsertVM(ctx, vm("a", "10.0.0.2")); err != nil {
		t.Fatal(err)
	}
	if err := s.InsertVM(ctx, vm("a", "10.0.0.3")); !errors.Is(err, ErrConflict) {
		t.Fatalf("duplicate name: err = %v", err)
	}
	if err := s.InsertVM(ctx, vm("b", "10.0.0.2")); !errors.Is(err, ErrConflict) {
		t.Fatalf("duplicate IP: err = %v", err)
	}
	if err := s.InsertVM(ctx, vm("Bad_Name", "10.0.0.9")); err == nil {
		t.Fatal("store accepted an invalid name")
	}
}

func TestNextGuestIP(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	p := netip.MustParsePrefix("10.9.0.1/29") // .0 network, .1 bridge, .7 broadcast → .2-.6 usable
	var got []string
	for i := 0; i < 5; i++ {
		a, err := s.NextGuestIP(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, a.String())
		if err := s.InsertVM(ctx, vm(fmt.Sprintf("v%d", i), a.String())); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v want %v", got, want)
	}
	if a, err := s.NextGuestIP(ctx, p); err == nil {
		t.Fatalf("full prefix returned %s", a)
	}
	// A bridge that is not the first address is skipped too, and freed
	// addresses are reused.
	v, _ := s.GetVMByName(ctx, "v1")
	if err := s.DeleteVM(ctx, v.ID); err != nil {
		t.Fatal(err)
	}
	if a, _ := s.NextGuestIP(ctx, p); a.String() != "10.9.0.3" {
		t.Fatalf("after delete got %s", a)
	}
	s2 := openTest(t)
	a, _ := s2.NextGuestIP(ctx, netip.MustParsePrefix("10.9.0.2/30")) // .0 net, .3 bcast, .2 bridge → .1
	if a.String() != "10.9.0.1" {
		t.Fatalf("bridge in the middle: got %s", a)
	}
}

func TestConcurrentInsert(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, conflict := 0, 0
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			err := s.InsertVM(ctx, vm(fmt.Sprintf("n%d", i%10), fmt.Sprintf("10.1.0.%d", i+2)))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, ErrConflict):
				conflict++
			default:
				t.Error(err)
			}
		}(i)
	}
	wg.Wait()
	if ok != 10 || conflict != 30 {
		t.Fatalf("ok=%d conflict=%d", ok, conflict)
	}
	if err := s.IntegrityCheck(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestImagesKernels(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	img := model.Image{ID: model.NewID(), Name: "busybox", Source: "oci:x", SizeBytes: 10}
	if err := s.UpsertImage(ctx, img); err != nil {
		t.Fatal(err)
	}
	if err := s.UpsertImage(ctx, model.Image{ID: model.NewID(), Name: "busybox"}); !errors.Is(err, ErrConflict) {
		t.Fatalf("dup image name: %v", err)
	}
	got, err := s.GetImage(ctx, "busybox")
	if err != nil || got.ID != img.ID {
		t.Fatalf("%+v %v", got, err)
	}
	if _, err := s.GetImage(ctx, "busy"); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if err := s.UpsertKernel(ctx, model.Kernel{Name: "k1", Release: "6.1"}); err != nil {
		t.Fatal(err)
	}
	ks, _ := s.ListKernels(ctx)
	if len(ks) != 1 || ks[0].Release != "6.1" {
		t.Fatalf("%+v", ks)
	}
}

func TestReopenKeepsData(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s, err := Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	s.InsertVM(ctx, vm("keep", "10.0.0.2"))
	s.Close()
	s, err = Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.GetVMByName(ctx, "keep"); err != nil {
		t.Fatal(err)
	}
}
