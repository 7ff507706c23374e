package imagebuild

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// bundleFiles builds a real image and returns its two disks' bytes.
func bundleFiles(t *testing.T) (rootfs, seed []byte) {
	t.Helper()
	img := makeImage(t, busyboxConfig, "amd64", layerTar(t, file("from", "bundle"), dir("root"), file("root/.rc", "rc")))
	lp := filepath.Join(t.TempDir(), "layout")
	p, err := layout.Write(lp, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	p.AppendImage(img)
	work := filepath.Join(t.TempDir(), "w")
	if _, err := Import(context.Background(), lp, Options{WorkDir: work, AuthorizedKey: testKey(t)}); err != nil {
		t.Fatal(err)
	}
	rootfs, _ = os.ReadFile(filepath.Join(work, RootfsName))
	seed, _ = os.ReadFile(filepath.Join(work, WorkSeedName))
	return rootfs, seed
}

func tarGz(t *testing.T, files map[string][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, b := range files {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg})
		tw.Write(b)
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

func TestFetchBundle(t *testing.T) {
	needE2fs(t)
	rootfs, seed := bundleFiles(t)
	good := tarGz(t, map[string][]byte{RootfsName: rootfs, WorkSeedName: seed, BundleConfigName: []byte(`{"cmd":["/bin/sh"]}`)})
	bundles := map[string][]byte{
		"/good.tar.gz":  good,
		"/extra.tar.gz": tarGz(t, map[string][]byte{RootfsName: rootfs, WorkSeedName: seed, "../evil": []byte("x")}),
		"/noseed.tar":   tarGz(t, map[string][]byte{RootfsName: rootfs}),
		"/junk.tar.gz":  tarGz(t, map[string][]byte{RootfsName: []byte("not ext4"), WorkSeedName: seed}),
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := bundles[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	}))
	defer srv.Close()
	sum := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

	key := testKey(t)
	work := filepath.Join(t.TempDir(), "w")
	res, err := FetchBundle(context.Background(), srv.URL+"/good.tar.gz", sum(good), Options{WorkDir: work, AuthorizedKey: key})
	if err != nil {
		t.Fatal(err)
	}
	if readExt4(t, filepath.Join(work, RootfsName), "/from") != "bundle" || len(res.Config.Cmd) != 1 {
		t.Fatalf("bundle result %+v", res)
	}
	if got := readExt4(t, filepath.Join(work, WorkSeedName), "/.ssh/authorized_keys"); strings.TrimSpace(got) != string(key) {
		t.Fatalf("seed key %q", got)
	}

	for _, tc := range []struct{ path, sum, want string }{
		{"/good.tar.gz", strings.Repeat("0", 64), "sha256 mismatch"},
		{"/extra.tar.gz", "", "unexpected entry"},
		{"/noseed.tar", "", "lacks"},
		{"/junk.tar.gz", "", "rootfs.ext4"},
		{"/missing.tar.gz", "", "404"},
	} {
		w := filepath.Join(t.TempDir(), "w")
		_, err := FetchBundle(context.Background(), srv.URL+tc.path, tc.sum, Options{WorkDir: w, AuthorizedKey: key})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want %q", tc.path, err, tc.want)
		}
		if ents, _ := os.ReadDir(w); len(ents) != 0 {
			t.Errorf("%s: left %v in the work dir", tc.path, ents)
		}
	}
	if _, err := FetchBundle(context.Background(), "https://bundles.example/x.tar.gz", "", Options{WorkDir: t.TempDir(), AuthorizedKey: key}); err == nil || !strings.Contains(err.Error(), "unpinned") {
		t.Fatalf("unpinned remote: %v", err)
	}
}
