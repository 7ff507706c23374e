package imagebuild

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ent is one tar entry for test layers.
type ent struct {
	name, body, link string
	typ              byte
	mode             int64
	uid, gid         int
	major, minor     int64
	xattrs           map[string]string
}

func file(name, body string) ent { return ent{name: name, body: body, typ: tar.TypeReg, mode: 0o644} }
func dir(name string) ent        { return ent{name: name, typ: tar.TypeDir, mode: 0o755} }
func symlink(name, target string) ent {
	return ent{name: name, link: target, typ: tar.TypeSymlink, mode: 0o777}
}
func hardlink(name, target string) ent { return ent{name: name, link: target, typ: tar.TypeLink} }

// layerTar writes entries as an uncompressed tar stream.
func layerTar(t testing.TB, ents ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mt := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	for _, e := range ents {
		h := &tar.Header{
			Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: e.mode,
			Uid: e.uid, Gid: e.gid, Devmajor: e.major, Devminor: e.minor,
			ModTime: mt, Format: tar.FormatPAX,
		}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if len(e.xattrs) > 0 {
			h.PAXRecords = map[string]string{}
			for k, v := range e.xattrs {
				h.PAXRecords["SCHILY.xattr."+k] = v
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("tar header %s: %v", e.name, err)
		}
		if e.typ == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// snapshot records every path under dir (except skip) with its type,
// mode, size, link count and content hash, to prove nothing changed.
func snapshot(t *testing.T, dir, skip string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if p == skip {
			return filepath.SkipDir
		}
		info, _ := d.Info()
		st := info.Sys().(*syscall.Stat_t)
		sum := ""
		if info.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			sum = fmt.Sprintf("%x", sha256.Sum256(b))
		}
		if info.Mode()&fs.ModeSymlink != 0 {
			sum, _ = os.Readlink(p)
		}
		out[p] = fmt.Sprintf("%v %d %d %d %s", info.Mode(), info.Size(), st.Nlink, info.ModTime().UnixNano(), sum)
		return nil
	})
	return out
}

func TestApplyLayerBasics(t *testing.T) {
	root := t.TempDir()
	l1 := layerTar(t,
		dir("etc/"), file("etc/passwd", "root:x:0:0::/root:/bin/sh\n"),
		dir("bin"), file("bin/busybox", "ELF"), symlink("bin/sh", "busybox"), symlink("bin/abs", "/bin/busybox"),
		hardlink("bin/ls", "bin/busybox"),
		ent{name: "usr/bin/su", body: "su", typ: tar.TypeReg, mode: 0o4755, uid: 0, gid: 0},
		ent{name: "home/u/f", body: "mine", typ: tar.TypeReg, mode: 0o600, uid: 1000, gid: 1000},
		ent{name: "dev/null", typ: tar.TypeChar, mode: 0o666, major: 1, minor: 3},
		ent{name: "dev/fifo", typ: tar.TypeFifo, mode: 0o600},
		ent{name: "cap", body: "c", typ: tar.TypeReg, mode: 0o755, xattrs: map[string]string{"user.test": "v"}},
		file("gone/a", "a"), file("gone/b", "b"), file("keep", "k"),
		file("opq/lower", "l"), file("opq/sub/lower", "l"),
	)
	l2 := layerTar(t,
		file(".wh.keep", ""), // whiteout of a file
		file("gone/.wh..wh..opq", ""),
		file("opq/new", "n"), file("opq/.wh..wh..opq", ""), file("opq/sub/new2", "n2"),
		file("etc/passwd", "replaced\n"),
		file(".wh.never-existed", ""), file("no/such/dir/.wh.x", ""),
	)
	for _, l := range [][]byte{l1, l2, nil} {
		if err := ApplyLayer(root, bytes.NewReader(l)); err != nil {
			t.Fatal(err)
		}
	}
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(root, p))
		if err != nil {
			t.Fatalf("read %s: %v", p, err)
		}
		return string(b)
	}
	if got := read("etc/passwd"); got != "replaced\n" {
		t.Fatalf("etc/passwd = %q", got)
	}
	if l, _ := os.Readlink(filepath.Join(root, "bin/abs")); l != "/bin/busybox" {
		t.Fatalf("absolute symlink target changed to %q", l)
	}
	var a, b syscall.Stat_t
	syscall.Stat(filepath.Join(root, "bin/busybox"), &a)
	syscall.Stat(filepath.Join(root, "bin/ls"), &b)
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Fatalf("hard link not kept: ino %d/%d nlink %d", a.Ino, b.Ino, a.Nlink)
	}
	if st, _ := os.Stat(filepath.Join(root, "usr/bin/su")); st.Mode()&os.ModeSetuid == 0 {
		t.Fatalf("setuid bit lost: %v", st.Mode())
	}
	var h syscall.Stat_t
	syscall.Stat(filepath.Join(root, "home/u/f"), &h)
	if h.Uid != 1000 || h.Gid != 1000 || h.Mode&0o777 != 0o600 {
		t.Fatalf("owner/mode: uid %d gid %d mode %o", h.Uid, h.Gid, h.Mode)
	}
	if st, _ := os.Stat(filepath.Join(root, "home/u/f")); !st.ModTime().Equal(time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)) {
		t.Fatalf("mtime %v", st.ModTime())
	}
	if st, _ := os.Stat(filepath.Join(root, "bin")); !st.ModTime().Equal(time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)) {
		t.Fatalf("dir mtime not restored: %v", st.ModTime())
	}
	var d syscall.Stat_t
	syscall.Stat(filepath.Join(root, "dev/null"), &d)
	if d.Mode&syscall.S_IFMT != syscall.S_IFCHR || d.Rdev != uint64(1<<8|3) {
		t.Fatalf("dev/null: mode %o rdev %d", d.Mode, d.Rdev)
	}
	if st, _ := os.Lstat(filepath.Join(root, "dev/fifo")); st.Mode()&os.ModeNamedPipe == 0 {
		t.Fatalf("fifo: %v", st.Mode())
	}
	xb := make([]byte, 16)
	if n, err := syscall.Getxattr(filepath.Join(root, "cap"), "user.test", xb); err != nil || string(xb[:n]) != "v" {
		t.Fatalf("xattr: %q %v", xb[:n], err)
	}
	for _, p := range []string{"keep", "gone/a", "gone/b", "opq/lower", "opq/sub/lower"} {
		if _, err := os.Lstat(filepath.Join(root, p)); !os.IsNotExist(err) {
			t.Errorf("%s survived its whiteout: %v", p, err)
		}
	}
	if read("opq/new") != "n" || read("opq/sub/new2") != "n2" {
		t.Fatal("opaque dir lost this layer's entries")
	}
}

// TestApplyLayerHostile feeds escape attempts and checks each is contained
// inside root or refused, and that nothing outside the build dir changed.
func TestApplyLayerHostile(t *testing.T) {
	type outcome int
	const (
		contained outcome = iota
		refused
	)
	base := t.TempDir()
	// Absolute host paths the layers aim at.
	hostSentinel := filepath.Join(base, "sentinel")
	hostDir := base
	cases := []struct {
		name   string
		layers [][]ent
		want   outcome
		check  func(t *testing.T, root string)
	}{
		{name: "dotdot", layers: [][]ent{{file("../../escaped", "x")}}, want: refused},
		{name: "dotdot inside", layers: [][]ent{{file("a/../../../escaped", "x")}}, want: refused},
		{name: "dotdot deep", layers: [][]ent{{file(strings.Repeat("../", 20)+"tmp/escaped", "x")}}, want: refused},
		{name: "absolute path", layers: [][]ent{{file("/abs/path", "x"), file(hostSentinel, "overwritten")}}, want: contained,
			check: func(t *testing.T, root string) {
				mustContent(t, filepath.Join(root, "abs/path"), "x")
				mustContent(t, filepath.Join(root, hostSentinel), "overwritten")
			}},
		{name: "abs symlink then write through", layers: [][]ent{{dir("etc"), symlink("evil", "/etc"), file("evil/passwd", "p")}}, want: contained,
			check: func(t *testing.T, root string) {
				mustContent(t, filepath.Join(root, "etc/passwd"), "p")
				if l, _ := os.Readlink(filepath.Join(root, "evil")); l != "/etc" {
					t.Fatalf("evil -> %q", l)
				}
			}},
		{name: "abs symlink to host dir", layers: [][]ent{{symlink("evil", hostDir), file("evil/sentinel", "overwritten")}}, want: refused},
		{name: "abs symlink to host dir, created inside", layers: [][]ent{{dir(hostDir), symlink("evil", hostDir), file("evil/sentinel", "inside")}}, want: contained,
			check: func(t *testing.T, root string) { mustContent(t, filepath.Join(root, hostSentinel), "inside") }},
		{name: "relative symlink climbing out", layers: [][]ent{{symlink("rel", "../../.."), file("rel/escaped", "x")}}, want: contained,
			check: func(t *testing.T, root string) { mustContent(t, filepath.Join(root, "escaped"), "x") }},
		{name: "symlink chain", layers: [][]ent{{symlink("a", "b"), symlink("b", "../../../../"), file("a/escaped", "x")}}, want: contained,
			check: func(t *testing.T, root string) { mustContent(t, filepath.Join(root, "escaped"), "x") }},
		{name: "hardlink to host file", layers: [][]ent{{hardlink("hl", hostSentinel)}}, want: refused},
		{name: "hardlink to /etc/shadow", layers: [][]ent{{hardlink("hl", "/etc/shadow")}}, want: refused},
		{name: "hardlink dotdot", layers: [][]ent{{hardlink("hl", "../sentinel")}}, want: refused},
		{name: "hardlink through symlinked dir", layers: [][]ent{{symlink("s", hostDir), hardlink("hl", "s/sentinel")}}, want: refused},
		{name: "hardlink to symlink links the symlink", layers: [][]ent{{symlink("s", hostSentinel), hardlink("hl", "s")}}, want: contained,
			check: func(t *testing.T, root string) {
				if l, err := os.Readlink(filepath.Join(root, "hl")); err != nil || l != hostSentinel {
					t.Fatalf("hl = %q %v, want a symlink", l, err)
				}
			}},
		{name: "dir symlinked in an earlier layer", layers: [][]ent{{symlink("d", hostDir)}, {file("d/sentinel", "overwritten"), file("d/new", "x")}}, want: refused},
		{name: "dir symlinked relative, earlier layer", layers: [][]ent{{dir("x"), symlink("x/d", "../../../../..")}, {file("x/d/escaped", "x")}}, want: contained,
			check: func(t *testing.T, root string) { mustContent(t, filepath.Join(root, "escaped"), "x") }},
		{name: "file over symlink replaces the symlink", layers: [][]ent{{symlink("f", hostSentinel)}, {file("f", "new")}}, want: contained,
			check: func(t *testing.T, root string) {
				if st, _ := os.Lstat(filepath.Join(root, "f")); !st.Mode().IsRegular() {
					t.Fatal("f is not a regular file")
				}
				mustContent(t, filepath.Join(root, "f"), "new")
			}},
		{name: "dir over symlink replaces the symlink", layers: [][]ent{{symlink("d", hostDir)}, {dir("d"), file("d/x", "x")}}, want: contained,
			check: func(t *testing.T, root string) { mustContent(t, filepath.Join(root, "d/x"), "x") }},
		{name: "duplicate entries, last wins", layers: [][]ent{{file("dup", "first"), file("dup", "second"), dir("dd"), file("dd", "file now"), file("fd", "f"), dir("fd")}}, want: contained,
			check: func(t *testing.T, root string) {
				mustContent(t, filepath.Join(root, "dup"), "second")
				mustContent(t, filepath.Join(root, "dd"), "file now")
				if st, _ := os.Lstat(filepath.Join(root, "fd")); !st.IsDir() {
					t.Fatal("fd is not a directory")
				}
			}},
		{name: "whiteout of a missing path", layers: [][]ent{{file(".wh.nothing", ""), file("no/dir/.wh.x", "")}}, want: contained},
		{name: "whiteout dotdot", layers: [][]ent{{file("../.wh.sentinel", "")}}, want: refused},
		{name: "whiteout named ..", layers: [][]ent{{file("sub/.wh..", "")}}, want: refused},
		{name: "whiteout through symlinked dir", layers: [][]ent{{symlink("w", hostDir)}, {file("w/.wh.sentinel", "")}}, want: contained},
		{name: "opaque through symlinked dir", layers: [][]ent{{symlink("w", hostDir)}, {file("w/.wh..wh..opq", "")}}, want: contained},
		{name: "zero-length layer", layers: [][]ent{nil}, want: contained},
		{name: "device node", layers: [][]ent{{ent{name: "dev/sda", typ: tar.TypeBlock, mode: 0o660, major: 8, minor: 0}}}, want: contained,
			check: func(t *testing.T, root string) {
				if st, err := os.Lstat(filepath.Join(root, "dev/sda")); err != nil || st.Mode()&os.ModeDevice == 0 {
					t.Fatalf("dev/sda: %v %v", st, err)
				}
			}},
		{name: "root entry", layers: [][]ent{{dir("./"), dir("/")}}, want: contained},
		{name: "root as file", layers: [][]ent{{file(".", "x")}}, want: refused},
		{name: "parent is a file", layers: [][]ent{{file("f", "x"), file("f/g", "y")}}, want: refused},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			os.WriteFile(hostSentinel, []byte("sentinel"), 0o644)
			build := filepath.Join(base, "build")
			root := filepath.Join(build, "root")
			os.RemoveAll(build)
			os.MkdirAll(root, 0o755)
			before := snapshot(t, base, build)
			var shadow syscall.Stat_t
			syscall.Stat("/etc/shadow", &shadow)

			var err error
			for _, l := range tc.layers {
				if err = ApplyLayer(root, bytes.NewReader(layerTar(t, l...))); err != nil {
					break
				}
			}
			switch {
			case tc.want == refused && err == nil:
				t.Fatal("hostile layer applied without error")
			case tc.want == refused && !strings.Contains(err.Error(), "entry "):
				t.Fatalf("error does not name the entry: %v", err)
			case tc.want == contained && err != nil:
				t.Fatalf("want contained, got %v", err)
			}
			if err != nil {
				t.Logf("refused: %v", err)
			}
			if tc.check != nil && err == nil {
				tc.check(t, root)
			}
			after := snapshot(t, base, build)
			for p, v := range before {
				if after[p] != v {
					t.Errorf("%s changed outside the build dir: %s -> %s", p, v, after[p])
				}
			}
			for p := range after {
				if _, ok := before[p]; !ok {
					t.Errorf("%s appeared outside the build dir", p)
				}
			}
			var shadow2 syscall.Stat_t
			syscall.Stat("/etc/shadow", &shadow2)
			if shadow.Nlink != shadow2.Nlink {
				t.Errorf("/etc/shadow link count changed %d -> %d", shadow.Nlink, shadow2.Nlink)
			}
			for _, p := range []string{"/tmp/escaped", "/escaped", filepath.Join(filepath.Dir(base), "escaped")} {
				if _, err := os.Lstat(p); err == nil {
					t.Errorf("%s exists", p)
				}
			}
		})
	}
}

func mustContent(t *testing.T, p, want string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil || string(b) != want {
		t.Fatalf("%s = %q, %v; want %q", p, b, err, want)
	}
}

func TestApplyLayerBadStream(t *testing.T) {
	root := t.TempDir()
	err := ApplyLayer(root, strings.NewReader(strings.Repeat("not a tar ", 100)))
	if err == nil {
		t.Fatal("garbage accepted as a layer")
	}
	if err := ApplyLayer(filepath.Join(root, "missing"), bytes.NewReader(nil)); err == nil {
		t.Fatal("missing root accepted")
	}
}
