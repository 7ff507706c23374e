package asuser

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"banger/internal/testenv"
)

var nobody = Creds{UID: 65534, GID: 65534}

var lim = Limits{MaxBytes: 1 << 20, MaxEntries: 100}

// tree makes a directory every user can traverse (t.TempDir's parents are
// private to root).
func tree(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "asuser-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	return dir
}

func TestStageRefusesWhatTheCallerCannotRead(t *testing.T) {
	testenv.RequireRoot(t, "to open files as another uid")
	dir := tree(t)
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, []byte("root only"), 0o600)
	os.Symlink(secret, filepath.Join(dir, "link-to-secret"))
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o666); err != nil {
		t.Fatal(err)
	}
	os.Chmod(fifo, 0o666)
	big := filepath.Join(dir, "big")
	os.WriteFile(big, make([]byte, 2<<20), 0o644)
	for _, p := range []string{"/etc/shadow", "/root/.bashrc", secret, filepath.Join(dir, "link-to-secret"), fifo, "/dev/zero", "/proc/self/status", big, "relative/path"} {
		t.Run(filepath.Base(p), func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "out")
			err := Stage(nobody, p, dst, lim)
			if err == nil {
				t.Fatalf("staged %s as nobody", p)
			}
			if !strings.Contains(err.Error(), p) {
				t.Errorf("error does not name %s: %v", p, err)
			}
			if _, serr := os.Lstat(dst); !os.IsNotExist(serr) {
				t.Errorf("a refused stage left %s", dst)
			}
			t.Logf("%v", err)
		})
	}
	// The same FIFO, device and /proc file are refused for root too: only
	// files and directories are imported.
	for _, p := range []string{fifo, "/dev/zero", "/proc/self/status"} {
		if err := Stage(Creds{}, p, filepath.Join(t.TempDir(), "out"), lim); !errors.Is(err, ErrNotAllowed) {
			t.Errorf("root staged %s: %v", p, err)
		}
	}
}

func TestStageCopiesWhatTheCallerCanRead(t *testing.T) {
	testenv.RequireRoot(t, "to open files as another uid")
	dir := tree(t)
	f := filepath.Join(dir, "kernel")
	os.WriteFile(f, []byte("vmlinuz"), 0o644)
	dst := filepath.Join(t.TempDir(), "k")
	if err := Stage(nobody, f, dst, lim); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "vmlinuz" {
		t.Fatalf("staged %q", b)
	}
	// A tree: files and dirs copied, symlinks skipped (never followed),
	// and one unreadable file fails the whole stage.
	mods := filepath.Join(dir, "mods")
	os.MkdirAll(filepath.Join(mods, "kernel", "fs"), 0o755)
	os.WriteFile(filepath.Join(mods, "modules.order"), []byte("a.ko\n"), 0o644)
	os.WriteFile(filepath.Join(mods, "kernel", "fs", "a.ko"), []byte("ko"), 0o644)
	os.Symlink("/etc", filepath.Join(mods, "build"))
	dst = filepath.Join(t.TempDir(), "m")
	if err := Stage(nobody, mods, dst, lim); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "kernel", "fs", "a.ko")); string(b) != "ko" {
		t.Errorf("tree file: %q", b)
	}
	if _, err := os.Lstat(filepath.Join(dst, "build")); !os.IsNotExist(err) {
		t.Errorf("symlink copied or followed: %v", err)
	}
	os.WriteFile(filepath.Join(mods, "private"), []byte("x"), 0o600)
	dst = filepath.Join(t.TempDir(), "m2")
	if err := Stage(nobody, mods, dst, lim); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("tree with a root-only file: %v", err)
	}
	if _, err := os.Lstat(dst); !os.IsNotExist(err) {
		t.Errorf("a failed stage left %s", dst)
	}
	// The thread identity came back: root still reads its own files.
	if _, err := os.ReadFile(filepath.Join(dir, "..", filepath.Base(dir), "kernel")); err != nil {
		t.Fatal(err)
	}
}

func TestCredsOf(t *testing.T) {
	c := CredsOf(uint32(os.Getuid()), uint32(os.Getgid()), int32(os.Getpid()))
	gs, _ := os.Getgroups()
	if len(c.Groups) != len(gs) {
		t.Errorf("groups %v, want %v", c.Groups, gs)
	}
	// A pid that runs as someone else gives no supplementary groups.
	if c := CredsOf(4242, 4242, int32(os.Getpid())); len(c.Groups) != 0 {
		t.Errorf("groups of a mismatched pid: %v", c.Groups)
	}
}

func TestCheckDir(t *testing.T) {
	testenv.RequireRoot(t, "to check directories as another uid")
	dir := tree(t)
	mk := func(name string, mode os.FileMode, gid int) string {
		p := filepath.Join(dir, name)
		if err := os.Mkdir(p, mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
		os.Chown(p, 0, gid)
		return p
	}
	private := mk("private", 0o700, 0)
	readable := mk("readable", 0o755, 0)
	group := mk("group", 0o770, 4242)
	os.Symlink(readable, filepath.Join(dir, "link"))
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	member := Creds{UID: 65534, GID: 65534, Groups: []uint32{65534, 4242}}

	for _, tc := range []struct {
		c       Creds
		path    string
		write   bool
		ok      bool
		resolve string
	}{
		{nobody, private, false, false, ""},
		{nobody, readable, false, true, readable},
		{nobody, readable, true, false, ""},
		{nobody, filepath.Join(dir, "link"), false, true, readable},
		{nobody, group, false, false, ""},
		{member, group, true, true, group},
		{nobody, file, false, false, ""},
		{nobody, "/proc/self", false, false, ""},
		{Creds{}, private, true, true, private},
	} {
		got, err := CheckDir(tc.c, tc.path, tc.write)
		if tc.ok != (err == nil) || tc.ok && got != tc.resolve {
			t.Errorf("CheckDir(%d %v, %s, write=%v) = %q, %v; want ok=%v", tc.c.UID, tc.c.Groups, tc.path, tc.write, got, err, tc.ok)
		}
		if err != nil && (!strings.Contains(err.Error(), tc.path) || !errors.Is(err, ErrNotAllowed)) {
			t.Errorf("%s: error %v does not name the path or is not ErrNotAllowed", tc.path, err)
		}
	}
}
