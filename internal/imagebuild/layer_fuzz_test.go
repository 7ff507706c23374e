package imagebuild

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// FuzzApplyLayer applies arbitrary bytes as a layer tar to a fresh root
// that sits beside a sentinel file and a sentinel directory, one level
// below another sentinel. Whatever the tar holds (names, links, whiteouts,
// sparse maps, device nodes, xattrs) and however it fails, nothing outside
// the root is created, removed or changed: not a byte, a mode, an owner, a
// link count or a ctime. The budget is small (256 KiB, 100 entries) so each
// execution is cheap; TestApplyLayerRefusesSparseBomb covers the real one.
func FuzzApplyLayer(f *testing.F) {
	for _, l := range fuzzLayerSeeds(f) {
		f.Add(l)
	}
	// One parent for every execution (a temp dir per execution cost more
	// than the apply): the sentinels are made and recorded once; each
	// execution gets a fresh root, and p's own times are compared from
	// after that root was made to before it is removed.
	top := f.TempDir()
	p := filepath.Join(top, "p")
	root := filepath.Join(p, "root")
	if err := os.MkdirAll(filepath.Join(p, "sentinel.d"), 0o755); err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{filepath.Join(top, "sentinel"), filepath.Join(p, "sentinel"), filepath.Join(p, "sentinel.d", "keep")} {
		if err := os.WriteFile(s, []byte("sentinel"), 0o644); err != nil {
			f.Fatal(err)
		}
	}
	var before map[string]string
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.Mkdir(root, 0o755); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := os.RemoveAll(root); err != nil {
				t.Fatal(err)
			}
		}()
		snap := outsideSnapshot(t, top, root)
		if before == nil {
			before = snap
		}
		before[p] = snap[p] // p's times moved with the new root
		var shadow syscall.Stat_t
		syscall.Stat("/etc/shadow", &shadow)

		err := applyLayerBudget(root, bytes.NewReader(data), &budget{Limits: Limits{MaxBytes: 256 << 10, MaxEntries: 100}})

		after := outsideSnapshot(t, top, root)
		for path, v := range before {
			if after[path] != v {
				t.Errorf("%s changed outside the root: %s -> %s (apply: %v)", path, v, after[path], err)
			}
		}
		for path, v := range after {
			if _, ok := before[path]; !ok {
				t.Errorf("%s appeared outside the root: %s (apply: %v)", path, v, err)
			}
		}
		if st, err := os.Lstat(root); err != nil || !st.IsDir() {
			t.Errorf("the root is no longer a directory: %v %v", st, err)
		}
		var shadow2 syscall.Stat_t
		syscall.Stat("/etc/shadow", &shadow2)
		if shadow.Nlink != shadow2.Nlink || shadow.Ctim != shadow2.Ctim {
			t.Errorf("/etc/shadow changed: nlink %d -> %d", shadow.Nlink, shadow2.Nlink)
		}
	})
}

// outsideSnapshot records everything under top except root's subtree:
// type and mode, owner, size, link count, mtime, ctime (which any chmod,
// chown, link, xattr or write moves) and the content or link target.
func outsideSnapshot(t *testing.T, top, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return filepath.SkipDir
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		extra := ""
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFREG:
			b, _ := os.ReadFile(p)
			extra = fmt.Sprintf("%x", sha256.Sum256(b))
		case syscall.S_IFLNK:
			extra, _ = os.Readlink(p)
		}
		out[p] = fmt.Sprintf("%o %d:%d %d %d %v %v %s", st.Mode, st.Uid, st.Gid, st.Size, st.Nlink, st.Mtim, st.Ctim, extra)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// fuzzLayerSeeds are small real layers: every entry type, escapes by
// "..", absolute names, symlinks and hard links, whiteouts, opaque dirs,
// xattrs, a long (PAX) name and GNU sparse headers, one within the fuzz
// budget and one far over it.
func fuzzLayerSeeds(t testing.TB) [][]byte {
	xattr := ent{name: "x", body: "x", typ: tar.TypeReg, mode: 0o755, xattrs: map[string]string{"user.a": "v", "trusted.overlay.opaque": "y"}}
	long := file(string(bytes.Repeat([]byte("d/"), 80))+"f", "deep")
	return [][]byte{
		layerTar(t, dir("./"), dir("etc"), file("etc/passwd", "root:x:0:0::/root:/bin/sh\n"), symlink("bin", "usr/bin"),
			dir("usr/bin"), file("usr/bin/busybox", "ELF"), hardlink("usr/bin/sh", "usr/bin/busybox"),
			ent{name: "dev/null", typ: tar.TypeChar, mode: 0o666, major: 1, minor: 3}, ent{name: "fifo", typ: tar.TypeFifo, mode: 0o600}),
		layerTar(t, file("../sentinel", "x"), file("a/../../sentinel.d/keep", "x")),
		layerTar(t, symlink("evil", "/etc"), file("evil/passwd", "p"), symlink("up", "../.."), file("up/sentinel", "x"),
			file("up/p/sentinel", "x"), dir("up/new")),
		layerTar(t, symlink("s", "../sentinel.d"), file("s/keep", "x"), file("s/.wh.keep", ""), file("s/.wh..wh..opq", "")),
		layerTar(t, hardlink("hl", "../sentinel"), hardlink("h2", "/../sentinel"), symlink("l", "../sentinel"), hardlink("h3", "l"),
			hardlink("h4", "/etc/shadow")),
		layerTar(t, file("keep", "k"), file(".wh.keep", ""), dir("o"), file("o/a", "a"), file("o/.wh..wh..opq", ""),
			file(".wh..", ""), file("no/such/.wh.x", ""), file("dup", "1"), dir("dup"), file("dup", "2")),
		layerTar(t, xattr, ent{name: "dev/sda", typ: tar.TypeBlock, mode: 0o660, major: 8}, ent{name: "suid", body: "s", typ: tar.TypeReg, mode: 0o4755, uid: 1000, gid: 1000}),
		layerTar(t, long, file("/abs/path", "x"), file(".", "x")),
		gnuSparseBomb("sparse", 64<<10),
		gnuSparseBomb("bomb", 1<<40),
	}
}
