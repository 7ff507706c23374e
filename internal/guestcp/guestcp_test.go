package guestcp

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pkg/sftp"
)

// pipeClient is an sftp client talking to an in-process sftp.Server that
// serves this machine's filesystem: the guest side is a temp dir here.
func pipeClient(t *testing.T) *sftp.Client {
	t.Helper()
	cr, sw := io.Pipe()
	sr, cw := io.Pipe()
	srv, err := sftp.NewServer(struct {
		io.Reader
		io.WriteCloser
	}{sr, sw})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	c, err := sftp.NewClientPipe(cr, cw, sftp.UseConcurrentWrites(true), sftp.MaxConcurrentRequestsPerFile(maxInflight))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sw.Close(); cw.Close(); c.Close() })
	return c
}

func writeTree(t *testing.T, root string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "a/b"), 0o755))
	big := make([]byte, 3<<20+17)
	rand.Read(big)
	must(os.WriteFile(filepath.Join(root, "a/big"), big, 0o640))
	must(os.WriteFile(filepath.Join(root, "a/b/exe"), []byte("#!/bin/sh\n"), 0o755))
	must(os.Symlink("../big", filepath.Join(root, "a/b/link")))
	must(os.Chmod(filepath.Join(root, "a/b"), 0o750))
	old := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	must(os.Chtimes(filepath.Join(root, "a/big"), old, old))
}

func sameTree(t *testing.T, want, got string, times bool) {
	t.Helper()
	filepath.Walk(want, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(want, p)
		g, err := os.Lstat(filepath.Join(got, rel))
		if err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
		if g.Mode() != fi.Mode() {
			t.Errorf("%s: mode %v, want %v", rel, g.Mode(), fi.Mode())
		}
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			a, _ := os.Readlink(p)
			b, _ := os.Readlink(filepath.Join(got, rel))
			if a != b {
				t.Errorf("%s: link %q, want %q", rel, b, a)
			}
		case fi.Mode().IsRegular():
			a, _ := os.ReadFile(p)
			b, _ := os.ReadFile(filepath.Join(got, rel))
			if !bytes.Equal(a, b) {
				t.Errorf("%s: contents differ", rel)
			}
			if times && !g.ModTime().Equal(fi.ModTime().Truncate(time.Second)) {
				t.Errorf("%s: mtime %v, want %v", rel, g.ModTime(), fi.ModTime())
			}
		}
		return nil
	})
}

func TestUploadDownloadTree(t *testing.T) {
	c := pipeClient(t)
	src, guest, back := t.TempDir(), t.TempDir(), t.TempDir()
	writeTree(t, src)
	ctx := context.Background()
	p, err := PlanUpload(c, "vm", []string{filepath.Join(src, "a")}, guest, Options{Recursive: true, Archive: true})
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	if err := p.Run(ctx, func(d int64) { n += d }); err != nil {
		t.Fatal(err)
	}
	if n != p.Bytes || n < 3<<20 {
		t.Fatalf("progress %d, plan %d", n, p.Bytes)
	}
	sameTree(t, filepath.Join(src, "a"), filepath.Join(guest, "a"), true)
	// Back to a new name.
	p, err = PlanDownload(c, "vm", []string{filepath.Join(guest, "a")}, filepath.Join(back, "copy"), Options{Recursive: true, Archive: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Run(ctx, nil); err != nil {
		t.Fatal(err)
	}
	sameTree(t, filepath.Join(src, "a"), filepath.Join(back, "copy"), true)
}

func TestTarRoundTrip(t *testing.T) {
	c := pipeClient(t)
	src, dst := t.TempDir(), t.TempDir()
	writeTree(t, src)
	var buf bytes.Buffer
	if err := WriteTar(context.Background(), c, "vm", []string{filepath.Join(src, "a")}, &buf, Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := ExtractTar(context.Background(), c, "vm", &buf, dst, Options{}); err != nil {
		t.Fatal(err)
	}
	sameTree(t, filepath.Join(src, "a"), filepath.Join(dst, "a"), true)
}

func TestBadSources(t *testing.T) {
	c := pipeClient(t)
	dir, guest := t.TempDir(), t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "ok"), []byte("x"), 0o644)
	for _, tc := range []struct {
		srcs []string
		dst  string
		opt  Options
		want string
	}{
		{[]string{filepath.Join(dir, "ok"), fifo}, guest, Options{}, "fifo: not a regular file, directory or symlink (a named pipe)"},
		{[]string{filepath.Join(dir, "missing")}, guest, Options{}, "missing: no such file or directory"},
		{[]string{dir}, guest, Options{}, "is a directory (use -r)"},
		{[]string{filepath.Join(dir, "ok"), filepath.Join(dir, "ok")}, filepath.Join(guest, "new"), Options{}, "not a directory"},
		{[]string{filepath.Join(dir, "ok")}, filepath.Join(guest, "no/such"), Options{}, "no such directory"},
	} {
		_, err := PlanUpload(c, "vm", tc.srcs, tc.dst, tc.opt)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v -> %s: %v, want %q", tc.srcs, tc.dst, err, tc.want)
		}
	}
	if ents, _ := os.ReadDir(guest); len(ents) != 0 {
		t.Fatalf("a failed plan wrote %v", ents)
	}
}
