package imagebuild

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/crypto/ssh"

	"banger/internal/disk"
	"banger/internal/model"
	"banger/internal/testenv"
)

func needE2fs(t testing.TB) {
	t.Helper()
	testenv.RequireTool(t, "mkfs.ext4", "e2fsck", "debugfs", "resize2fs")
}

func testKey(t testing.TB) []byte {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSpace(ssh.MarshalAuthorizedKey(sp))
}

// testRegistry is go-containerregistry's in-process registry behind a
// handler that counts layer blob GETs by digest.
type testRegistry struct {
	host string
	mu   sync.Mutex
	gets map[string]int // "sha256:…" -> GET count
}

func startRegistry(t testing.TB) *testRegistry {
	t.Helper()
	tr := &testRegistry{gets: map[string]int{}}
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			if _, d, ok := strings.Cut(r.URL.Path, "/blobs/"); ok {
				tr.mu.Lock()
				tr.gets[d]++
				tr.mu.Unlock()
			}
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	tr.host = strings.TrimPrefix(srv.URL, "http://")
	return tr
}

func (tr *testRegistry) getCount(d v1.Hash) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.gets[d.String()]
}

func (tr *testRegistry) push(t testing.TB, repo string, img v1.Image) string {
	t.Helper()
	ref := tr.host + "/" + repo
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return ref
}

func tarLayer(t testing.TB, data []byte) v1.Layer {
	t.Helper()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func makeImage(t testing.TB, cfg model.ImageConfig, arch string, layers ...[]byte) v1.Image {
	t.Helper()
	var ls []v1.Layer
	for _, l := range layers {
		ls = append(ls, tarLayer(t, l))
	}
	img, err := mutate.AppendLayers(empty.Image, ls...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	cf.Config.Env, cf.Config.Entrypoint, cf.Config.Cmd = cfg.Env, cfg.Entrypoint, cfg.Cmd
	cf.Config.WorkingDir, cf.Config.User = cfg.WorkingDir, cfg.User
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// busyboxLayers returns three layers: a busybox userland (the host's
// static busybox), config files and /root, and a layer of changes
// (whiteout, opaque dir, hard link, xattr).
func busyboxLayers(t testing.TB) [][]byte {
	t.Helper()
	testenv.RequireFile(t, "/bin/busybox", "busybox-static")
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	l1 := []ent{dir("bin"), dir("sbin"), dir("usr/bin"), dir("etc"),
		{name: "bin/busybox", body: string(bb), typ: tar.TypeReg, mode: 0o755}}
	for _, a := range []string{"sh", "ls", "cat", "echo", "mount"} {
		l1 = append(l1, symlink("bin/"+a, "busybox"))
	}
	l1 = append(l1, symlink("sbin/init", "/bin/busybox"), file("etc/motd", "lower\n"), file("etc/skel/.lower", "x"))
	l2 := []ent{
		file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
		file("etc/group", "root:x:0:\n"),
		{name: "root", typ: tar.TypeDir, mode: 0o700},
		file("root/.profile", "export PS1='bb# '\n"),
		{name: "root/.ssh", typ: tar.TypeDir, mode: 0o755},
		file("root/.ssh/authorized_keys", "ssh-ed25519 AAAAimage-own-key\n"),
		{name: "dev/null", typ: tar.TypeChar, mode: 0o666, major: 1, minor: 3},
		{name: "tmp", typ: tar.TypeDir, mode: 0o1777},
	}
	l3 := []ent{
		file("bin/.wh.echo", ""),
		file("etc/skel/.wh..wh..opq", ""), file("etc/skel/.new", "n"),
		hardlink("usr/bin/busybox", "bin/busybox"),
		{name: "usr/bin/ping", body: "p", typ: tar.TypeReg, mode: 0o755, xattrs: map[string]string{"user.banger": "cap"}},
		file("etc/motd", "upper\n"),
	}
	return [][]byte{layerTar(t, l1...), layerTar(t, l2...), layerTar(t, l3...)}
}

var busyboxConfig = model.ImageConfig{
	Env:        []string{"PATH=/bin:/usr/bin", "HOME=/root"},
	Entrypoint: []string{"/bin/sh", "-c"},
	Cmd:        []string{"echo hi"},
	WorkingDir: "/root",
	User:       "0:0",
}

// dfs runs a read-only debugfs request on img.
func dfs(t testing.TB, img, req string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", req, img).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs %q: %v: %s", req, err, out)
	}
	return string(out)
}

func readExt4(t testing.TB, img, p string) string {
	t.Helper()
	b, err := disk.ReadFileFromExt4(context.Background(), img, p)
	if err != nil {
		t.Fatalf("%s in %s: %v", p, img, err)
	}
	return string(b)
}

func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

func TestPullBusyboxAndCachedRepull(t *testing.T) {
	needE2fs(t)
	ctx := context.Background()
	reg := startRegistry(t)
	layers := busyboxLayers(t)
	img := makeImage(t, busyboxConfig, "amd64", layers...)
	ref := reg.push(t, "busybox:1", img)
	key := testKey(t)
	cache := filepath.Join(t.TempDir(), "cache")
	work := filepath.Join(t.TempDir(), "img1")

	var stages []string
	var layerBytes int64
	res, err := Pull(ctx, ref, Options{WorkDir: work, CacheDir: cache, AuthorizedKey: key,
		Progress: func(stage, msg string, done, total int64) {
			stages = append(stages, stage)
			if stage == "layer" && done == total {
				layerBytes += done
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	wantDigest, _ := img.Digest()
	if res.Digest != wantDigest.String() || res.Dir != work {
		t.Fatalf("result %+v, want digest %s dir %s", res, wantDigest, work)
	}
	if !reflect.DeepEqual(res.Config, busyboxConfig) {
		t.Fatalf("config %+v, want %+v", res.Config, busyboxConfig)
	}
	if got := dirNames(t, work); !reflect.DeepEqual(got, []string{ManifestName, RootfsName, WorkSeedName}) {
		t.Fatalf("work dir holds %v", got)
	}
	if layerBytes == 0 || !strings.Contains(strings.Join(stages, ","), "layer") || stages[len(stages)-1] != "done" {
		t.Fatalf("progress stages %v, layer bytes %d", stages, layerBytes)
	}

	rootfs, seed := filepath.Join(work, RootfsName), filepath.Join(work, WorkSeedName)
	for _, p := range []string{rootfs, seed} {
		if err := disk.Fsck(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	bb, _ := os.ReadFile("/bin/busybox")
	if readExt4(t, rootfs, "/bin/busybox") != string(bb) {
		t.Fatal("/bin/busybox in rootfs.ext4 differs from the layer's")
	}
	if out := dfs(t, rootfs, "stat /bin/sh"); !strings.Contains(out, "Type: symlink") || !strings.Contains(out, `"busybox"`) {
		t.Fatalf("/bin/sh: %s", out)
	}
	if out := dfs(t, rootfs, "stat /bin/echo"); !strings.Contains(out, "File not found") {
		t.Fatalf("whited-out /bin/echo still present: %s", out)
	}
	if out := dfs(t, rootfs, "ls /etc/skel"); strings.Contains(out, ".lower") || !strings.Contains(out, ".new") {
		t.Fatalf("opaque /etc/skel: %s", out)
	}
	if readExt4(t, rootfs, "/etc/motd") != "upper\n" {
		t.Fatal("later layer did not win for /etc/motd")
	}
	if out := dfs(t, rootfs, "stat /usr/bin/busybox"); !strings.Contains(out, "Links: 2") {
		t.Fatalf("hard link lost: %s", out)
	}
	if out := dfs(t, rootfs, "stat /dev/null"); !strings.Contains(out, "Type: character") {
		t.Fatalf("/dev/null: %s", out)
	}
	if out := dfs(t, rootfs, "stat /tmp"); !strings.Contains(out, "Mode:  01777") {
		t.Fatalf("/tmp mode: %s", out)
	}
	if out := dfs(t, rootfs, "ea_get /usr/bin/ping user.banger"); !strings.Contains(out, "cap") {
		t.Fatalf("xattr lost: %s", out)
	}
	// /root lives on the work seed; the rootfs keeps an empty mount point.
	if out := dfs(t, rootfs, "stat /root/.profile"); !strings.Contains(out, "File not found") {
		t.Fatalf("/root/.profile still in rootfs: %s", out)
	}
	if out := dfs(t, rootfs, "stat /root"); !strings.Contains(out, "Type: directory") || !strings.Contains(out, "Mode:  0700") {
		t.Fatalf("/root mount point: %s", out)
	}
	if readExt4(t, seed, "/.profile") != "export PS1='bb# '\n" {
		t.Fatal("seed lacks the image's /root/.profile")
	}
	if got := readExt4(t, seed, "/.ssh/authorized_keys"); got != string(key)+"\n" {
		t.Fatalf("seed authorized_keys = %q, want the daemon key", got)
	}
	if out := dfs(t, seed, "stat /.ssh"); !strings.Contains(out, "Mode:  0700") {
		t.Fatalf(".ssh mode: %s", out)
	}
	pk, _, _, _, _ := ssh.ParseAuthorizedKey(key)
	if res.KeyFingerprint != ssh.FingerprintSHA256(pk) {
		t.Fatalf("fingerprint %s", res.KeyFingerprint)
	}
	st1, _ := os.Stat(rootfs)
	st2, _ := os.Stat(seed)
	if res.SizeBytes != st1.Size()+st2.Size() {
		t.Fatalf("SizeBytes %d", res.SizeBytes)
	}
	m, err := ReadManifest(work)
	if err != nil {
		t.Fatal(err)
	}
	if m.Digest != res.Digest || m.Ref != ref || len(m.Layers) != 3 || m.KeyFingerprint != res.KeyFingerprint || m.Source != "oci" {
		t.Fatalf("manifest %+v", m)
	}
	lds := layerDigests(t, img)
	for _, d := range lds {
		if n := reg.getCount(d); n != 1 {
			t.Fatalf("layer %s fetched %d times on a cold pull", d, n)
		}
		if _, err := os.Stat(filepath.Join(cache, "sha256", d.Hex)); err != nil {
			t.Fatalf("layer %s not cached: %v", d, err)
		}
	}

	// A second image sharing the first two layers: only its new layer is
	// downloaded.
	extra := layerTar(t, file("etc/motd", "second image\n"))
	img2 := makeImage(t, busyboxConfig, "amd64", layers[0], layers[1], extra)
	ref2 := reg.push(t, "other:2", img2)
	work2 := filepath.Join(t.TempDir(), "img2")
	if _, err := Pull(ctx, ref2, Options{WorkDir: work2, CacheDir: cache, AuthorizedKey: key}); err != nil {
		t.Fatal(err)
	}
	lds2 := layerDigests(t, img2)
	// Shared layers keep the single GET of the first pull; the new one
	// gets its first.
	for i, d := range lds2 {
		if n := reg.getCount(d); n != 1 {
			t.Fatalf("layer %d (%s): %d GETs after the re-pull, want 1", i, d, n)
		}
	}
	if readExt4(t, filepath.Join(work2, RootfsName), "/etc/motd") != "second image\n" {
		t.Fatal("second image content wrong")
	}

	// A re-pull of the same digest reuses the built disks: no layer is
	// fetched, the image gets its own files and the new key.
	key3 := testKey(t)
	work3 := filepath.Join(t.TempDir(), "img3")
	var sawCached bool
	res3, err := Pull(ctx, ref, Options{WorkDir: work3, CacheDir: cache, AuthorizedKey: key3,
		Progress: func(stage, _ string, _, _ int64) { sawCached = sawCached || stage == "cached" }})
	if err != nil {
		t.Fatal(err)
	}
	if !sawCached || res3.Digest != res.Digest || !reflect.DeepEqual(res3.Config, busyboxConfig) {
		t.Fatalf("re-pull of the same digest: cached=%v %+v", sawCached, res3)
	}
	for _, d := range lds {
		if n := reg.getCount(d); n != 1 {
			t.Fatalf("layer %s: %d GETs after a same-digest re-pull, want 1", d, n)
		}
	}
	seed3 := filepath.Join(work3, WorkSeedName)
	if got := readExt4(t, seed3, "/.ssh/authorized_keys"); got != string(key3)+"\n" {
		t.Fatalf("cached seed key %q", got)
	}
	if readExt4(t, seed3, "/.profile") != "export PS1='bb# '\n" || readExt4(t, filepath.Join(work3, RootfsName), "/bin/busybox") != string(bb) {
		t.Fatal("cached image content differs")
	}
	for _, p := range []string{filepath.Join(work3, RootfsName), seed3} {
		if err := disk.Fsck(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	var a, b syscall.Stat_t
	syscall.Stat(filepath.Join(work3, RootfsName), &a)
	syscall.Stat(rootfs, &b)
	if a.Ino == b.Ino {
		t.Fatal("re-pulled image shares its rootfs inode with the first")
	}
	// The first image's seed still holds the first key.
	if got := readExt4(t, seed, "/.ssh/authorized_keys"); got != string(key)+"\n" {
		t.Fatalf("first seed changed: %q", got)
	}

	// A damaged built entry is dropped and the image built from layers;
	// a corrupt cached blob is noticed and fetched again.
	built, _ := filepath.Glob(filepath.Join(cache, "built", "v1-"+wantDigest.Hex))
	if len(built) != 1 {
		t.Fatalf("built cache entry missing: %v", built)
	}
	os.Truncate(filepath.Join(built[0], "rootfs.ext4"), 1<<20)
	os.WriteFile(filepath.Join(cache, "sha256", lds[0].Hex), []byte("rot"), 0o644)
	work4 := filepath.Join(t.TempDir(), "img4")
	if _, err := Pull(ctx, ref, Options{WorkDir: work4, CacheDir: cache, AuthorizedKey: key}); err != nil {
		t.Fatal(err)
	}
	if n := reg.getCount(lds[0]); n != 2 {
		t.Fatalf("corrupt cached layer: %d GETs, want 2", n)
	}
	if n := reg.getCount(lds[1]); n != 1 {
		t.Fatalf("intact cached layer: %d GETs, want 1", n)
	}
	if err := disk.Fsck(ctx, filepath.Join(work4, RootfsName)); err != nil {
		t.Fatal(err)
	}
	if readExt4(t, filepath.Join(work4, RootfsName), "/bin/busybox") != string(bb) {
		t.Fatal("rebuilt image content differs")
	}
}

func layerDigests(t testing.TB, img v1.Image) []v1.Hash {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var out []v1.Hash
	for _, l := range ls {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, d)
	}
	return out
}

func TestPullMultiArchPicksAmd64(t *testing.T) {
	needE2fs(t)
	ctx := context.Background()
	reg := startRegistry(t)
	amd := makeImage(t, model.ImageConfig{Cmd: []string{"amd"}}, "amd64", layerTar(t, file("arch", "amd64")))
	arm := makeImage(t, model.ImageConfig{Cmd: []string{"arm"}}, "arm64", layerTar(t, file("arch", "arm64")))
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
	)
	r, _ := name.ParseReference(reg.host + "/multi:latest")
	if err := remote.WriteIndex(r, idx); err != nil {
		t.Fatal(err)
	}
	key := testKey(t)
	work := filepath.Join(t.TempDir(), "w")
	res, err := Pull(ctx, r.String(), Options{WorkDir: work, AuthorizedKey: key})
	if err != nil {
		t.Fatal(err)
	}
	if got := readExt4(t, filepath.Join(work, RootfsName), "/arch"); got != "amd64" {
		t.Fatalf("picked %q", got)
	}
	amdDigest, _ := amd.Digest()
	idxDigest, _ := idx.Digest()
	m, _ := ReadManifest(work)
	if res.Digest != amdDigest.String() || m.IndexDigest != idxDigest.String() || res.Config.Cmd[0] != "amd" {
		t.Fatalf("digest %s index %s config %+v", res.Digest, m.IndexDigest, res.Config)
	}
	// Without CacheDir the blobs are fetched into the work dir and removed.
	if got := dirNames(t, work); len(got) != 3 {
		t.Fatalf("work dir holds %v", got)
	}

	// The option picks another platform.
	work2 := filepath.Join(t.TempDir(), "w2")
	if _, err := Pull(ctx, r.String(), Options{WorkDir: work2, AuthorizedKey: key, Platform: "linux/arm64"}); err != nil {
		t.Fatal(err)
	}
	if got := readExt4(t, filepath.Join(work2, RootfsName), "/arch"); got != "arm64" {
		t.Fatalf("picked %q for linux/arm64", got)
	}

	// An index without amd64 fails and leaves nothing built.
	armOnly := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}})
	r2, _ := name.ParseReference(reg.host + "/armonly:latest")
	remote.WriteIndex(r2, armOnly)
	work3 := filepath.Join(t.TempDir(), "w3")
	if _, err := Pull(ctx, r2.String(), Options{WorkDir: work3, AuthorizedKey: key}); err == nil || !strings.Contains(err.Error(), "amd64") {
		t.Fatalf("arm-only index: %v", err)
	}
	if got := dirNames(t, work3); len(got) != 0 {
		t.Fatalf("failed pull left %v", got)
	}
	// A plain arm64 image is refused too.
	r3 := reg.push(t, "armimg:1", arm)
	if _, err := Pull(ctx, r3, Options{WorkDir: work3, AuthorizedKey: key}); err == nil || !strings.Contains(err.Error(), "linux/arm64") {
		t.Fatalf("arm64 image: %v", err)
	}
}

func TestPullRefusesHostileLayerAndCleansUp(t *testing.T) {
	needE2fs(t)
	ctx := context.Background()
	reg := startRegistry(t)
	img := makeImage(t, model.ImageConfig{}, "amd64",
		layerTar(t, file("ok", "fine"), dir("etc")),
		layerTar(t, symlink("evil", "/etc"), file("../../escaped", "boom")))
	ref := reg.push(t, "hostile:1", img)
	parent := t.TempDir()
	os.WriteFile(filepath.Join(parent, "sentinel"), []byte("s"), 0o644)
	work := filepath.Join(parent, "build")
	before := snapshot(t, parent, work)
	res, err := Pull(ctx, ref, Options{WorkDir: work, CacheDir: filepath.Join(parent, "cache"), AuthorizedKey: testKey(t)})
	if err == nil || res != nil {
		t.Fatalf("hostile image pulled: %+v %v", res, err)
	}
	if !strings.Contains(err.Error(), "../../escaped") {
		t.Fatalf("error does not name the entry: %v", err)
	}
	if got := dirNames(t, work); len(got) != 0 {
		t.Fatalf("refused pull left %v in the work dir", got)
	}
	after := snapshot(t, parent, work)
	for p, v := range before {
		if after[p] != v && p != parent { // parent's mtime moves: build/ and cache/ were made in it

			t.Errorf("%s changed", p)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok && !strings.HasPrefix(p, filepath.Join(parent, "cache")) {
			t.Errorf("%s appeared outside the build dir", p)
		}
	}
}

func TestPullBadInput(t *testing.T) {
	ctx := context.Background()
	key := testKey(t)
	work := t.TempDir()
	for _, tc := range []struct {
		ref  string
		o    Options
		want string
	}{
		{"UPPER/Case::x", Options{WorkDir: work, AuthorizedKey: key}, "UPPER/Case::x"},
		{"127.0.0.1:1/x:1", Options{AuthorizedKey: key}, "WorkDir"},
		{"127.0.0.1:1/x:1", Options{WorkDir: work}, "authorized key is empty"},
		{"127.0.0.1:1/x:1", Options{WorkDir: work, AuthorizedKey: []byte("ssh-ed25519 nonsense")}, "authorized key"},
		{"127.0.0.1:1/x:1", Options{WorkDir: work, AuthorizedKey: append(append(key, '\n'), key...)}, "several lines"},
		{"127.0.0.1:1/x:1", Options{WorkDir: work, AuthorizedKey: key, Platform: "a/b/c/d"}, "platform"},
		{"127.0.0.1:1/x:1", Options{WorkDir: work, AuthorizedKey: key}, "127.0.0.1:1/x:1"}, // nothing listens
	} {
		_, err := Pull(ctx, tc.ref, tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Pull(%q, %+v): %v, want an error mentioning %q", tc.ref, tc.o, err, tc.want)
		}
	}
	for ref, insecure := range map[string]bool{"localhost:5000/a": true, "127.0.0.5:5000/a": true, "[::1]:5000/a": true, "example.invalid/a": false} {
		r, err := ParseRef(ref)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.Context().Registry.Scheme() == "http"; got != insecure {
			t.Errorf("%s: http=%v", ref, got)
		}
	}
}

func TestImportLayoutAndDockerSave(t *testing.T) {
	needE2fs(t)
	ctx := context.Background()
	key := testKey(t)
	img := makeImage(t, busyboxConfig, "amd64", layerTar(t, file("from", "import"), dir("root"), file("root/.rc", "rc")))
	want, _ := img.Digest()

	lp := filepath.Join(t.TempDir(), "layout")
	p, err := layout.Write(lp, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	other := makeImage(t, model.ImageConfig{}, "arm64", layerTar(t, file("from", "arm")))
	p.AppendImage(other, layout.WithPlatform(v1.Platform{OS: "linux", Architecture: "arm64"}))
	if err := p.AppendImage(img, layout.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"})); err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(t.TempDir(), "w")
	res, err := Import(ctx, lp, Options{WorkDir: work, AuthorizedKey: key})
	if err != nil {
		t.Fatal(err)
	}
	if res.Digest != want.String() || readExt4(t, filepath.Join(work, RootfsName), "/from") != "import" ||
		readExt4(t, filepath.Join(work, WorkSeedName), "/.rc") != "rc" {
		t.Fatalf("layout import: %+v", res)
	}

	tb := filepath.Join(t.TempDir(), "saved.tar")
	tag, _ := name.NewTag("example.invalid/saved:1")
	if err := tarball.WriteToFile(tb, tag, img); err != nil {
		t.Fatal(err)
	}
	work2 := filepath.Join(t.TempDir(), "w2")
	res2, err := Import(ctx, tb, Options{WorkDir: work2, AuthorizedKey: key})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(res2.Config, busyboxConfig) || readExt4(t, filepath.Join(work2, RootfsName), "/from") != "import" {
		t.Fatalf("docker-save import: %+v", res2)
	}
	m, _ := ReadManifest(work2)
	if m.Source != "import" || m.Ref != tb {
		t.Fatalf("manifest %+v", m)
	}

	junk := filepath.Join(t.TempDir(), "junk.tar")
	os.WriteFile(junk, []byte("not an image"), 0o644)
	emptyDir := t.TempDir()
	for _, bad := range []string{junk, emptyDir, filepath.Join(emptyDir, "missing")} {
		w := filepath.Join(t.TempDir(), "w")
		if _, err := Import(ctx, bad, Options{WorkDir: w, AuthorizedKey: key}); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("Import(%s): %v", bad, err)
		}
		if got := dirNames(t, w); len(got) != 0 {
			t.Errorf("failed import left %v", got)
		}
	}
}

func TestBuildFromTree(t *testing.T) {
	needE2fs(t)
	ctx := context.Background()
	tree := t.TempDir()
	os.MkdirAll(filepath.Join(tree, "etc"), 0o755)
	os.WriteFile(filepath.Join(tree, "etc/hostname"), []byte("deb\n"), 0o644)
	os.Mkdir(filepath.Join(tree, "root"), 0o700)
	os.WriteFile(filepath.Join(tree, "root/.bashrc"), []byte("bash"), 0o644)
	// The tree's own .ssh is a symlink: it must be replaced inside the
	// seed, never followed.
	os.Symlink("/etc", filepath.Join(tree, "root/.ssh"))
	before := snapshot(t, tree, "")
	key := testKey(t)
	work := filepath.Join(t.TempDir(), "w")
	cfg := model.ImageConfig{Cmd: []string{"/bin/bash"}}
	res, err := BuildFromTree(ctx, tree, cfg, Options{WorkDir: work, AuthorizedKey: key})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(res.Config, cfg) || res.Digest != "" {
		t.Fatalf("result %+v", res)
	}
	if readExt4(t, filepath.Join(work, RootfsName), "/etc/hostname") != "deb\n" {
		t.Fatal("rootfs content")
	}
	seed := filepath.Join(work, WorkSeedName)
	if readExt4(t, seed, "/.bashrc") != "bash" || readExt4(t, seed, "/.ssh/authorized_keys") != string(key)+"\n" {
		t.Fatal("seed content")
	}
	if out := dfs(t, seed, "stat /"); !strings.Contains(out, "Mode:  0700") {
		t.Fatalf("seed root mode: %s", out)
	}
	after := snapshot(t, tree, "")
	if !reflect.DeepEqual(before, after) {
		t.Fatal("BuildFromTree changed its input tree")
	}
	if _, err := os.Stat("/etc/authorized_keys"); err == nil {
		t.Fatal("key written through the tree's .ssh symlink on the host")
	}
	b, _ := os.ReadFile(filepath.Join(work, ManifestName))
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil || m["source"] != "tree" {
		t.Fatalf("manifest %s", b)
	}
	if _, err := BuildFromTree(ctx, filepath.Join(tree, "etc/hostname"), cfg, Options{WorkDir: t.TempDir(), AuthorizedKey: key}); err == nil {
		t.Fatal("a file accepted as a tree")
	}
}

// The build tree holds the image's setuid binaries on the host: only root
// may reach it.
func TestScratchIsPrivate(t *testing.T) {
	work := filepath.Join(t.TempDir(), "w")
	b, err := newBuild(Options{WorkDir: work, AuthorizedKey: testKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	tree, err := b.freshTree()
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Dir(tree))
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("scratch dir %s: %v %v", filepath.Dir(tree), st.Mode(), err)
	}
	b.cleanup()
	if got := dirNames(t, work); len(got) != 0 {
		t.Fatalf("cleanup left %v", got)
	}
}

func TestPullCancelledLeavesNothing(t *testing.T) {
	needE2fs(t)
	reg := startRegistry(t)
	img := makeImage(t, model.ImageConfig{}, "amd64",
		layerTar(t, file("a", strings.Repeat("a", 3<<20))), layerTar(t, file("b", "b")), layerTar(t, file("c", "c")))
	ref := reg.push(t, "cancel:1", img)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	work := filepath.Join(t.TempDir(), "w")
	cache := filepath.Join(t.TempDir(), "cache")
	res, err := Pull(ctx, ref, Options{WorkDir: work, CacheDir: cache, AuthorizedKey: testKey(t),
		Progress: func(stage, _ string, _, _ int64) {
			if stage == "apply" {
				cancel()
			}
		}})
	if err == nil || res != nil {
		t.Fatalf("cancelled pull: %+v %v", res, err)
	}
	if got := dirNames(t, work); len(got) != 0 {
		t.Fatalf("cancelled pull left %v", got)
	}
	if _, err := os.Stat(filepath.Join(cache, "built")); err == nil {
		t.Fatal("cancelled pull left a built cache entry")
	}
}
