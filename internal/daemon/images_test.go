package daemon

import (
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"banger/api"
	"banger/internal/testenv"
	"banger/internal/testfixture"
)

func needImageTools(t *testing.T) {
	t.Helper()
	testenv.RequireTool(t, "mkfs.ext4", "e2fsck", "debugfs", "resize2fs")
	testenv.RequireFile(t, testfixture.BusyboxPath, "busybox-static")
}

// pushBusybox pushes the busybox fixture to reg as repo:1 and returns the ref.
func pushBusybox(t *testing.T, host, repo, tag string) string {
	t.Helper()
	img, err := testfixture.BusyboxImage(tag)
	if err != nil {
		t.Fatal(err)
	}
	ref := host + "/" + repo + ":1"
	r, _ := name.ParseReference(ref, name.Insecure)
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	return ref
}

func TestImageAutoPullOnce(t *testing.T) {
	needImageTools(t)
	reg := testfixture.NewRegistry()
	srv := httptest.NewServer(reg)
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	refA := pushBusybox(t, host, "a/busybox", "A")
	refB := pushBusybox(t, host, "b/busybox", "B")
	refC := pushBusybox(t, host, "c/busybox", "C")
	d, _ := startDaemonWith(t, func(c *Config) { c.DefaultImage = "img" })

	// Baseline: how many manifest GETs one pull makes.
	if _, err := d.images.findOrAutoPullImage(context.Background(), refC); err != nil {
		t.Fatal(err)
	}
	perPull := reg.ManifestGets("c/busybox")
	if perPull == 0 {
		t.Fatal("registry counted no manifest GET for a pull")
	}

	var wg sync.WaitGroup
	var mu sync.Mutex
	ids := map[string]int{}
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			img, err := d.images.findOrAutoPullImage(context.Background(), refA)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Error(err)
				return
			}
			ids[img.ID]++
		}()
	}
	// A different image pulls alongside.
	wg.Add(1)
	go func() {
		defer wg.Done()
		if _, err := d.images.findOrAutoPullImage(context.Background(), refB); err != nil {
			t.Error(err)
		}
	}()
	wg.Wait()
	if len(ids) != 1 {
		t.Fatalf("8 auto-pulls returned %d different image ids: %v", len(ids), ids)
	}
	if got := reg.ManifestGets("a/busybox"); got != perPull {
		t.Fatalf("8 parallel auto-pulls made %d manifest GETs; one pull makes %d", got, perPull)
	}
	imgs, _ := d.store.ListImages(context.Background())
	var names []string
	for _, i := range imgs {
		names = append(names, i.Name)
	}
	if len(imgs) != 4 { // img (seeded), a, b, c
		t.Fatalf("images: %v", names)
	}
	entries, _ := os.ReadDir(d.images.dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".tmp-") {
			t.Fatalf("temp dir left: %s", e.Name())
		}
	}
	if d.images.imagePullLock.Len() != 0 {
		t.Fatal("pull lock map not empty")
	}
}

func TestImageRemoveAndRotate(t *testing.T) {
	needImageTools(t)
	d, c := startTestDaemon(t)
	dir := t.TempDir()
	img, err := testfixture.BusyboxImage("rm")
	if err != nil {
		t.Fatal(err)
	}
	if err := testfixture.WriteLayout(filepath.Join(dir, "bb"), img); err != nil {
		t.Fatal(err)
	}
	var got api.Image
	if err := c.Call(context.Background(), api.MethodImageImport, api.ImageImportParams{Path: filepath.Join(dir, "bb"), Name: "bb", Kernel: "testk"}, &got); err != nil {
		t.Fatal(err)
	}
	if err := c.Call(context.Background(), api.MethodImageImport, api.ImageImportParams{Path: filepath.Join(dir, "bb"), Name: "bb"}, nil); !api.IsKind(err, api.KindAlreadyExists) {
		t.Fatalf("second import: %v", err)
	}
	if err := c.Call(context.Background(), api.MethodImageImport, api.ImageImportParams{Path: filepath.Join(dir, "nope"), Name: "x"}, nil); !api.IsKind(err, api.KindInvalidArgument) || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("missing path: %v", err)
	}
	// Rotation rewrites the seed and records the new fingerprint.
	old := got.KeyFingerprint
	var res api.SSHKeyRotateResult
	if err := c.Call(context.Background(), api.MethodSSHKeyRotate, nil, &res); err != nil {
		t.Fatal(err)
	}
	after, _ := d.store.GetImage(context.Background(), "bb")
	if after.KeyFingerprint == old || after.KeyFingerprint != res.Fingerprint || res.ImagesRefreshed != 1 {
		t.Fatalf("fingerprint %s -> %s, rotate said %+v", old, after.KeyFingerprint, res)
	}
	// rm refuses while a VM uses it, naming the VM.
	if err := c.Call(context.Background(), api.MethodVMCreate, api.VMCreateParams{Name: "user", Image: "bb", NoStart: true}, nil); err != nil {
		t.Fatal(err)
	}
	err = c.Call(context.Background(), api.MethodImageDelete, api.NameParams{Name: "bb"}, nil)
	if !api.IsKind(err, api.KindConflict) || !strings.Contains(err.Error(), "user") {
		t.Fatalf("rm in use: %v", err)
	}
	c.Call(context.Background(), api.MethodVMDelete, api.VMDeleteParams{Name: "user"}, nil)
	if err := c.Call(context.Background(), api.MethodImageDelete, api.NameParams{Name: "bb"}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(after.Dir); !os.IsNotExist(err) {
		t.Fatalf("image dir still there: %v", err)
	}
}
