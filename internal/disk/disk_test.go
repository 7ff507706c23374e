package disk

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"banger/internal/testenv"
)

func needTools(t *testing.T) {
	t.Helper()
	testenv.RequireTool(t, "mkfs.ext4", "e2fsck", "debugfs", "resize2fs", "dumpe2fs")
}

// debugfsOut runs a read-only debugfs request and returns stdout.
func debugfsOut(t *testing.T, img, req string) string {
	t.Helper()
	out, err := debugfs(context.Background(), img, false, "-R", req)
	if err != nil {
		t.Fatalf("debugfs %q: %v", req, err)
	}
	return string(out)
}

func statField(t *testing.T, img, p, re string) string {
	t.Helper()
	out := debugfsOut(t, img, "stat "+quote(p))
	m := regexp.MustCompile(re).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("stat %s: no %q in:\n%s", p, re, out)
	}
	return m[1]
}

func buildTree(t *testing.T) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "tree")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(src, "etc"), 0o755))
	must(os.WriteFile(filepath.Join(src, "etc/hostname"), []byte("guest\n"), 0o644))
	must(os.WriteFile(filepath.Join(src, "big"), bytes.Repeat([]byte("x"), 3<<20), 0o600))
	must(os.Chown(filepath.Join(src, "big"), 1000, 1001))
	must(os.Link(filepath.Join(src, "big"), filepath.Join(src, "big.link")))
	must(os.Symlink("/etc/hostname", filepath.Join(src, "abs-link")))
	must(unix.Mknod(filepath.Join(src, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(unix.Setxattr(filepath.Join(src, "etc/hostname"), "user.banger", []byte("yes"), 0))
	return src
}

func TestMkfsFromDirKeepsTree(t *testing.T) {
	needTools(t)
	ctx := context.Background()
	src := buildTree(t)
	size, err := SizeForTree(src)
	if err != nil {
		t.Fatal(err)
	}
	if size%mib != 0 || size < 64*mib+3<<20 {
		t.Fatalf("SizeForTree = %d: want whole MiB above content+64MiB", size)
	}
	img := filepath.Join(t.TempDir(), "root.ext4")
	if err := MkfsExt4FromDir(ctx, src, img, size, "banger-test"); err != nil {
		t.Fatal(err)
	}
	if err := Fsck(ctx, img); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(img)
	if st.Size() != size {
		t.Fatalf("image is %d bytes, want %d", st.Size(), size)
	}
	if blocks := st.Sys().(*syscall.Stat_t).Blocks * 512; blocks >= size/2 {
		t.Fatalf("image uses %d bytes on disk of %d: not sparse", blocks, size)
	}
	got, err := ReadFileFromExt4(ctx, img, "/etc/hostname")
	if err != nil || string(got) != "guest\n" {
		t.Fatalf("read /etc/hostname = %q, %v", got, err)
	}
	if u := statField(t, img, "/big", `User:\s+(\d+)`); u != "1000" {
		t.Fatalf("/big uid = %s, want 1000", u)
	}
	if g := statField(t, img, "/big", `Group:\s+(\d+)`); g != "1001" {
		t.Fatalf("/big gid = %s, want 1001", g)
	}
	if l := statField(t, img, "/big", `Links:\s+(\d+)`); l != "2" {
		t.Fatalf("/big links = %s, want 2 (hard link kept)", l)
	}
	if m := statField(t, img, "/big", `Mode:\s+(\d+)`); m != "0600" {
		t.Fatalf("/big mode = %s, want 0600", m)
	}
	if typ := statField(t, img, "/null", `Type: (\S+)`); typ != "character" {
		t.Fatalf("/null type = %s, want character special", typ)
	}
	if typ := statField(t, img, "/abs-link", `Type: (\S+)`); typ != "symlink" {
		t.Fatalf("/abs-link type = %s", typ)
	}
	if out := debugfsOut(t, img, "ea_get /etc/hostname user.banger"); !strings.Contains(out, "yes") {
		t.Fatalf("xattr user.banger not copied: %q", out)
	}
	if label := debugfsOut(t, img, "stats"); !strings.Contains(label, "banger-test") {
		t.Fatalf("label missing from superblock")
	}
}

func TestMkfsRefusesBadInput(t *testing.T) {
	needTools(t)
	ctx := context.Background()
	dir := t.TempDir()
	img := filepath.Join(dir, "x.ext4")
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	big := filepath.Join(dir, "big")
	os.Mkdir(big, 0o755)
	os.WriteFile(filepath.Join(big, "data"), bytes.Repeat([]byte{1}, 12<<20), 0o644)
	errs := map[string]error{
		"missing src":  MkfsExt4FromDir(ctx, filepath.Join(dir, "nope"), img, 64*mib, "x"),
		"src not dir":  MkfsExt4FromDir(ctx, file, img, 64*mib, "x"),
		"long label":   MkfsExt4FromDir(ctx, dir, img, 64*mib, strings.Repeat("l", 17)),
		"tiny size":    MkfsExt4FromDir(ctx, dir, img, 1<<20, "x"),
		"tree too big": MkfsExt4FromDir(ctx, big, img, 8*mib, "x"),
	}
	if _, err := os.Stat(img); err == nil {
		t.Error("a failed mkfs left its image behind")
	}
	for name, err := range errs {
		if err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestFsckFindsCorruption(t *testing.T) {
	needTools(t)
	ctx := context.Background()
	img := filepath.Join(t.TempDir(), "c.ext4")
	if err := MkfsExt4FromDir(ctx, buildTree(t), img, 32*mib, "c"); err != nil {
		t.Fatal(err)
	}
	f, _ := os.OpenFile(img, os.O_RDWR, 0)
	// Scribble over the start of the group descriptor table (block 1).
	f.WriteAt(bytes.Repeat([]byte{0xa5}, 512), 4096)
	f.Close()
	err := Fsck(ctx, img)
	if err == nil {
		t.Fatal("Fsck passed a corrupted image")
	}
	if !strings.Contains(err.Error(), img) {
		t.Fatalf("error does not name the image: %v", err)
	}
}

func TestCopySparseKeepsHolesAndData(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	const size = 256 << 20
	if err := CreateSparse(src, size); err != nil {
		t.Fatal(err)
	}
	f, _ := os.OpenFile(src, os.O_RDWR, 0)
	chunks := map[int64][]byte{0: []byte("head"), 100 << 20: bytes.Repeat([]byte("m"), 1<<20), size - 3: []byte("end")}
	for off, b := range chunks {
		f.WriteAt(b, off)
	}
	f.Close()
	if err := CopySparse(src, dst); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(dst)
	if st.Size() != size {
		t.Fatalf("dst size %d, want %d", st.Size(), size)
	}
	if used := st.Sys().(*syscall.Stat_t).Blocks * 512; used > 8<<20 {
		t.Fatalf("dst uses %d bytes: holes not kept", used)
	}
	a, _ := os.ReadFile(src)
	b, _ := os.ReadFile(dst)
	if !bytes.Equal(a, b) {
		t.Fatal("copy differs from source")
	}
	if err := CopySparse(filepath.Join(dir, "missing"), dst); err == nil {
		t.Fatal("copy of a missing file succeeded")
	}
}

func TestCopySkippingZeros(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	data := make([]byte, 1<<20)
	copy(data[300<<10:], "middle")
	os.WriteFile(src, data, 0o644)
	in, _ := os.Open(src)
	defer in.Close()
	out, _ := os.Create(dst)
	if err := copySkippingZeros(in, out, 0, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	out.Truncate(int64(len(data)))
	out.Close()
	got, _ := os.ReadFile(dst)
	if !bytes.Equal(got, data) {
		t.Fatal("fallback copy differs")
	}
}

func TestGrow(t *testing.T) {
	needTools(t)
	ctx := context.Background()
	img := filepath.Join(t.TempDir(), "g.ext4")
	if err := MkfsExt4FromDir(ctx, buildTree(t), img, 32*mib, "g"); err != nil {
		t.Fatal(err)
	}
	if err := Grow(ctx, img, 16*mib); err == nil || !strings.Contains(err.Error(), "already") {
		t.Fatalf("shrink not refused clearly: %v", err)
	}
	if err := Grow(ctx, img, 32*mib); err != nil {
		t.Fatalf("same size: %v", err)
	}
	if err := Grow(ctx, img, 1<<30); err != nil {
		t.Fatal(err)
	}
	if err := Fsck(ctx, img); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("dumpe2fs", "-h", img).Output()
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`Block count:\s+(\d+)`).FindSubmatch(out)
	n, _ := strconv.Atoi(string(m[1]))
	if int64(n)*4096 != 1<<30 {
		t.Fatalf("filesystem has %d blocks after grow, want %d", n, (1<<30)/4096)
	}
	got, err := ReadFileFromExt4(ctx, img, "/etc/hostname")
	if err != nil || string(got) != "guest\n" {
		t.Fatalf("content lost by grow: %q %v", got, err)
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "manifest.json")
	for _, content := range []string{"one", "two, longer"} {
		if err := WriteFileAtomic(p, []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(p)
		if string(got) != content {
			t.Fatalf("got %q want %q", got, content)
		}
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v", st.Mode())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("temp files left: %v", ents)
	}
	if err := WriteFileAtomic(filepath.Join(dir, "no/such/dir/x"), nil, 0o644); err == nil {
		t.Fatal("write into a missing directory succeeded")
	}
	if a, b := TempSibling(p, "x"), TempSibling(p, "x"); a == b {
		t.Fatalf("TempSibling repeated %s", a)
	}
}

func TestWriteAndReadInsideExt4(t *testing.T) {
	needTools(t)
	ctx := context.Background()
	src := filepath.Join(t.TempDir(), "seed")
	os.MkdirAll(src, 0o700)
	// A hostile seed: .ssh is a symlink that must be replaced, not followed.
	os.Symlink("/etc", filepath.Join(src, ".ssh"))
	img := filepath.Join(t.TempDir(), "seed.ext4")
	if err := MkfsExt4FromDir(ctx, src, img, 16*mib, "seed"); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFileFromExt4(ctx, img, "/.ssh/authorized_keys"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: err = %v, want ErrNotExist", err)
	}
	if err := MkdirExt4(ctx, img, "/.ssh", 0o700, 0, 0); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"ssh-ed25519 AAAA first\n", "ssh-ed25519 BBBB second, longer\n"} {
		if err := WriteFileToExt4(ctx, img, "/.ssh/authorized_keys", []byte(key), 0o600, 0, 0); err != nil {
			t.Fatal(err)
		}
		got, err := ReadFileFromExt4(ctx, img, "/.ssh/authorized_keys")
		if err != nil || string(got) != key {
			t.Fatalf("read back %q, %v; want %q", got, err, key)
		}
		if err := Fsck(ctx, img); err != nil {
			t.Fatal(err)
		}
	}
	if typ := statField(t, img, "/.ssh", `Type: (\S+)`); typ != "directory" {
		t.Fatalf(".ssh is a %s", typ)
	}
	if m := statField(t, img, "/.ssh", `Mode:\s+(\d+)`); m != "0700" {
		t.Fatalf(".ssh mode %s", m)
	}
	if m := statField(t, img, "/.ssh/authorized_keys", `Mode:\s+(\d+)`); m != "0600" {
		t.Fatalf("authorized_keys mode %s", m)
	}
	// Binary data survives the round trip.
	bin := []byte{0, 1, 2, 0xff, '\n', 0}
	if err := WriteFileToExt4(ctx, img, "/bin.dat", bin, 0o644, 5, 6); err != nil {
		t.Fatal(err)
	}
	if got, _ := ReadFileFromExt4(ctx, img, "/bin.dat"); !bytes.Equal(got, bin) {
		t.Fatalf("binary round trip: %v", got)
	}
	if u := statField(t, img, "/bin.dat", `User:\s+(\d+)`); u != "5" {
		t.Fatalf("uid %s", u)
	}
	// The host's /etc was never touched through the old symlink.
	if _, err := os.Stat("/etc/authorized_keys"); err == nil {
		t.Fatal("/etc/authorized_keys exists on the host")
	}
	for _, bad := range []string{"relative", "/a/../b", `/q"uote`, "/new\nline"} {
		if err := WriteFileToExt4(ctx, img, bad, nil, 0o600, 0, 0); err == nil {
			t.Errorf("path %q accepted", bad)
		}
	}
	if err := WriteFileToExt4(ctx, img, "/no/such/file", nil, 0o600, 0, 0); err == nil {
		t.Error("write with a missing parent succeeded")
	}
	if err := WriteFileToExt4(ctx, img, "/.ssh", nil, 0o600, 0, 0); err == nil {
		t.Error("write over a directory succeeded")
	}
}
