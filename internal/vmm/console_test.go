package vmm

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"testing"
)

// A guest that writes far more than the cap leaves at most two generations
// on disk, and a reader following by logical offset sees every byte that
// was kept, in order.
func TestConsoleLogCapsAndRotates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	const max = 1000
	l, err := OpenConsoleLog(path, max, true)
	if err != nil {
		t.Fatal(err)
	}
	var all bytes.Buffer
	for i := 0; i < 57; i++ {
		b := bytes.Repeat([]byte{byte('a' + i%26)}, 97)
		all.Write(b)
		if n, err := l.Write(b); err != nil || n != len(b) {
			t.Fatalf("write %d: n=%d err=%v", i, n, err)
		}
	}
	l.Close()
	var onDisk int64
	for _, p := range []string{path, path + ".1"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > max {
			t.Errorf("%s is %d bytes, over the %d cap", p, fi.Size(), max)
		}
		onDisk += fi.Size()
	}
	if onDisk > 2*max {
		t.Errorf("%d bytes on disk, want at most %d", onDisk, 2*max)
	}
	// From offset 0 the reader resumes at the oldest kept byte.
	got, off, err := ReadConsole(path, 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if off != int64(all.Len()) {
		t.Errorf("end offset %d, want %d", off, all.Len())
	}
	if want := all.Bytes()[all.Len()-len(got):]; !bytes.Equal(got, want) || int64(len(got)) != onDisk {
		t.Errorf("read %d bytes, not the last %d written", len(got), onDisk)
	}
	// A follower in the middle gets exactly the rest; a small max pages.
	mid := int64(all.Len()) - 1500
	got, off, _ = ReadConsole(path, mid, 700)
	if !bytes.Equal(got, all.Bytes()[mid:mid+700]) || off != mid+700 {
		t.Errorf("page from %d: got %d bytes to %d", mid, len(got), off)
	}
	got, off, _ = ReadConsole(path, off, 1<<20)
	if !bytes.Equal(got, all.Bytes()[mid+700:]) || off != int64(all.Len()) {
		t.Errorf("rest: got %d bytes to %d", len(got), off)
	}
	// Re-opened for an adopted VM, it appends and keeps the offsets.
	l, err = OpenConsoleLog(path, max, false)
	if err != nil {
		t.Fatal(err)
	}
	l.Write([]byte("more"))
	l.Close()
	got, off, _ = ReadConsole(path, int64(all.Len()), 100)
	if string(got) != "more" || off != int64(all.Len())+4 {
		t.Errorf("after re-open: %q to %d", got, off)
	}
	// A fresh boot starts over.
	l, _ = OpenConsoleLog(path, max, true)
	l.Close()
	if _, err := os.Stat(path + ".1"); !os.IsNotExist(err) {
		t.Errorf("fresh log kept the previous boot's generation: %v", err)
	}
}

// PumpConsole copies a stream into the log until it ends.
func TestPumpConsole(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	l, err := OpenConsoleLog(path, 64, true)
	if err != nil {
		t.Fatal(err)
	}
	a, b := net.Pipe()
	done := PumpConsole(b, l)
	for i := 0; i < 10; i++ {
		a.Write(bytes.Repeat([]byte("x"), 50))
	}
	a.Close()
	<-done
	got, off, _ := ReadConsole(path, 0, 1<<20)
	if off != 500 || len(got) > 128 || len(got) < 64 {
		t.Errorf("after 500 bytes through a 64-byte cap: read %d bytes, offset %d", len(got), off)
	}
}
