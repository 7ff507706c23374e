package imagebuild

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"banger/internal/disk"
	"banger/internal/model"
	"banger/internal/testenv"
)

// seedImage builds a small image from a tree with a /root and returns its
// work seed path.
func seedImage(t *testing.T, key []byte) string {
	t.Helper()
	tree := t.TempDir()
	os.MkdirAll(filepath.Join(tree, "root/notes"), 0o700)
	os.WriteFile(filepath.Join(tree, "root/notes/todo"), []byte("keep me"), 0o600)
	work := filepath.Join(t.TempDir(), "img")
	res, err := BuildFromTree(context.Background(), tree, model.ImageConfig{}, Options{WorkDir: work, AuthorizedKey: key})
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(res.Dir, WorkSeedName)
}

func TestMaterializeWorkDisk(t *testing.T) {
	needE2fs(t)
	ctx := context.Background()
	key := testKey(t)
	seed := seedImage(t, key)
	dst := filepath.Join(t.TempDir(), "root.ext4")
	st, _ := os.Stat(seed)
	if err := MaterializeWorkDisk(ctx, seed, dst, st.Size()-1); err == nil || !strings.Contains(err.Error(), "smaller than") {
		t.Fatalf("undersized work disk: %v", err)
	}
	if _, err := os.Stat(dst); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("refused work disk left a file")
	}
	const size = 2 << 30
	if err := MaterializeWorkDisk(ctx, seed, dst, size); err != nil {
		t.Fatal(err)
	}
	dst2, _ := os.Stat(dst)
	if dst2.Size() != size {
		t.Fatalf("work disk is %d bytes, want %d", dst2.Size(), size)
	}
	if out := dfs(t, dst, "stats"); !strings.Contains(out, fmt.Sprintf("Block count:              %d", size/4096)) {
		t.Fatalf("filesystem not grown:\n%s", out)
	}
	if err := disk.Fsck(ctx, dst); err != nil {
		t.Fatal(err)
	}
	if readExt4(t, dst, "/notes/todo") != "keep me" {
		t.Fatal("seed content lost")
	}
	got, err := AuthorizedKeysOnDisk(ctx, dst)
	if err != nil || string(got) != string(key)+"\n" {
		t.Fatalf("authorized_keys %q %v", got, err)
	}
	if got := dirNames(t, filepath.Dir(dst)); len(got) != 1 {
		t.Fatalf("temp files left: %v", got)
	}
	// A VM's own disk can take a new key in place.
	key2 := testKey(t)
	fp, err := SetAuthorizedKey(ctx, dst, key2)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := KeyFingerprint(key2); fp != want {
		t.Fatalf("fingerprint %s want %s", fp, want)
	}
	if got, _ := AuthorizedKeysOnDisk(ctx, dst); string(got) != string(key2)+"\n" {
		t.Fatalf("after SetAuthorizedKey: %q", got)
	}
	if err := disk.Fsck(ctx, dst); err != nil {
		t.Fatal(err)
	}
	if err := MaterializeWorkDisk(ctx, filepath.Join(t.TempDir(), "nope"), dst, size); err == nil {
		t.Fatal("missing seed accepted")
	}
}

func TestRefreshWorkSeed(t *testing.T) {
	needE2fs(t)
	ctx := context.Background()
	keyA, keyB := testKey(t), testKey(t)
	seed := seedImage(t, keyA)
	fp, err := RefreshWorkSeed(ctx, seed, keyB)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := KeyFingerprint(keyB); fp != want {
		t.Fatalf("fingerprint %s want %s", fp, want)
	}
	got, err := AuthorizedKeysOnDisk(ctx, seed)
	if err != nil || string(got) != string(keyB)+"\n" {
		t.Fatalf("after refresh: %q %v", got, err)
	}
	if readExt4(t, seed, "/notes/todo") != "keep me" {
		t.Fatal("refresh lost seed content")
	}
	if err := disk.Fsck(ctx, seed); err != nil {
		t.Fatal(err)
	}
	for _, n := range dirNames(t, filepath.Dir(seed)) {
		if strings.HasSuffix(n, ".tmp") {
			t.Fatalf("temp file %s left", n)
		}
	}
	if _, err := RefreshWorkSeed(ctx, seed, []byte("garbage")); err == nil {
		t.Fatal("bad key accepted")
	}
	if got, _ := AuthorizedKeysOnDisk(ctx, seed); string(got) != string(keyB)+"\n" {
		t.Fatal("a refused refresh changed the seed")
	}
}

// TestWorkSeedTornRead: 8 goroutines materialize work disks from the seed
// while another refreshes it 20 times, alternating keys. Every disk must
// pass e2fsck and hold exactly key A or exactly key B.
func TestWorkSeedTornRead(t *testing.T) {
	needE2fs(t)
	ctx := context.Background()
	keyA, keyB := testKey(t), testKey(t)
	wantA, wantB := string(keyA)+"\n", string(keyB)+"\n"
	seed := seedImage(t, keyA)
	out := t.TempDir()

	const readers, refreshes, maxPerReader = 8, 20, 200
	var done atomic.Bool
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []string
	seen := map[string]int{}
	fail := func(format string, args ...any) {
		mu.Lock()
		failures = append(failures, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	for r := 0; r < readers; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// At least one disk each, then until the refresher is done.
			for i := 0; i < maxPerReader && (i == 0 || !done.Load()); i++ {
				dst := filepath.Join(out, fmt.Sprintf("r%d-%d.ext4", r, i))
				if err := MaterializeWorkDisk(ctx, seed, dst, 128<<20); err != nil {
					fail("materialize %s: %v", dst, err)
					return
				}
				if err := disk.Fsck(ctx, dst); err != nil {
					fail("fsck %s: %v", dst, err)
				}
				got, err := AuthorizedKeysOnDisk(ctx, dst)
				switch {
				case err != nil:
					fail("%s: %v", dst, err)
				case string(got) == wantA:
					mu.Lock()
					seen["A"]++
					mu.Unlock()
				case string(got) == wantB:
					mu.Lock()
					seen["B"]++
					mu.Unlock()
				default:
					fail("%s: authorized_keys is neither key: %q", dst, got)
				}
				os.Remove(dst)
			}
		}()
	}
	for i := 0; i < refreshes; i++ {
		key := keyB
		if i%2 == 1 {
			key = keyA
		}
		if _, err := RefreshWorkSeed(ctx, seed, key); err != nil {
			fail("refresh %d: %v", i, err)
			break
		}
	}
	done.Store(true)
	wg.Wait()
	for _, f := range failures {
		t.Error(f)
	}
	t.Logf("work disks: %d with key A, %d with key B", seen["A"], seen["B"])
	if seen["A"]+seen["B"] < readers {
		t.Fatalf("only %d disks checked", seen["A"]+seen["B"])
	}
	if err := disk.Fsck(ctx, seed); err != nil {
		t.Fatal(err)
	}
	// 20 refreshes starting with B end on A.
	if got, _ := AuthorizedKeysOnDisk(ctx, seed); string(got) != wantA {
		t.Fatalf("final seed key %q", got)
	}
}

func TestAddAuthorizedKey(t *testing.T) {
	needE2fs(t)
	keyA, keyB := testKey(t), testKey(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.MkdirAll(filepath.Join(src, ".ssh"), 0o700)
	os.WriteFile(filepath.Join(src, ".ssh", "authorized_keys"), append([]byte("# user's own\n"), keyA...), 0o600)
	img := filepath.Join(dir, "work.ext4")
	if err := disk.MkfsExt4FromDir(context.Background(), src, img, 32<<20, "work"); err != nil {
		t.Fatal(err)
	}
	changed, err := AddAuthorizedKey(context.Background(), img, keyA, nil)
	if err != nil || changed {
		t.Fatalf("key already there: changed=%v err=%v", changed, err)
	}
	if changed, err = AddAuthorizedKey(context.Background(), img, keyB, nil); err != nil || !changed {
		t.Fatalf("new key: changed=%v err=%v", changed, err)
	}
	got, _ := AuthorizedKeysOnDisk(context.Background(), img)
	if !bytes.Contains(got, bytes.TrimSpace(keyA)) || !bytes.Contains(got, bytes.TrimSpace(keyB)) || !bytes.Contains(got, []byte("# user's own")) {
		t.Fatalf("authorized_keys now:\n%s", got)
	}
	if err := disk.Fsck(context.Background(), img); err != nil {
		t.Fatal(err)
	}
	if _, err := AddAuthorizedKey(context.Background(), img, []byte("not a key"), nil); err == nil {
		t.Fatal("accepted junk")
	}
	// Rotating again: C in, A (retired) out, the comment line stays.
	keyC := testKey(t)
	if changed, err = AddAuthorizedKey(context.Background(), img, keyC, [][]byte{keyA}); err != nil || !changed {
		t.Fatalf("rotate: changed=%v err=%v", changed, err)
	}
	got, _ = AuthorizedKeysOnDisk(context.Background(), img)
	if bytes.Contains(got, bytes.TrimSpace(keyA)) || !bytes.Contains(got, bytes.TrimSpace(keyB)) || !bytes.Contains(got, bytes.TrimSpace(keyC)) || !bytes.Contains(got, []byte("# user's own")) {
		t.Fatalf("after retiring A:\n%s", got)
	}
}

// A guest's 15 TiB sparse authorized_keys (ext4's largest file, near
// enough, and free for the guest to make) is not read: it is set aside
// under SetAsideSuffix, unread and intact, and the daemon's key gets a
// fresh file.
func TestAddAuthorizedKeyRefusesHugeFile(t *testing.T) {
	needE2fs(t)
	key := testKey(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.MkdirAll(filepath.Join(src, ".ssh"), 0o700)
	const huge = 15 << 40
	f, err := os.Create(filepath.Join(src, ".ssh", "authorized_keys"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(huge); err != nil {
		testenv.Skip(t, "this filesystem holds no 15 TiB sparse file: %v", err)
	}
	f.Close()
	img := filepath.Join(dir, "work.ext4")
	if err := disk.MkfsExt4FromDir(context.Background(), src, img, 64<<20, "work"); err != nil {
		t.Fatal(err)
	}
	if _, err := AuthorizedKeysOnDisk(context.Background(), img); !errors.Is(err, disk.ErrTooLarge) {
		t.Fatalf("read of a 15 TiB authorized_keys: %v", err)
	}
	changed, err := AddAuthorizedKey(context.Background(), img, key, nil)
	if err != nil || !changed {
		t.Fatalf("changed=%v err=%v", changed, err)
	}
	got, err := AuthorizedKeysOnDisk(context.Background(), img)
	if err != nil || !bytes.Equal(bytes.TrimSpace(got), bytes.TrimSpace(key)) {
		t.Fatalf("authorized_keys now %q %v", got, err)
	}
	out, err := exec.Command("debugfs", "-R", "stat /.ssh/authorized_keys"+SetAsideSuffix, img).Output()
	if err != nil || !strings.Contains(string(out), fmt.Sprintf("Size: %d", int64(huge))) {
		t.Fatalf("set-aside file: %v\n%s", err, out)
	}
	if err := disk.Fsck(context.Background(), img); err != nil {
		t.Fatal(err)
	}
}
