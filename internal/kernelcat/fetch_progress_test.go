package kernelcat

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func TestParseDebSize(t *testing.T) {
	out := "Package: linux-image-6.1.0-28-cloud-amd64\nVersion: 6.1.119-1\nSize: 65341234\nMD5sum: x\n"
	if got := parseDebSize([]byte(out)); got != 65341234 {
		t.Fatalf("parseDebSize = %d, want 65341234", got)
	}
	if got := parseDebSize([]byte("Package: x\n")); got != -1 {
		t.Fatalf("no Size: %d, want -1 (unknown)", got)
	}
}

// watchBytes reports what lands in the download dir while apt writes it.
func TestWatchBytes(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	var seen []int64
	stop := watchBytes(dir, 10*time.Millisecond, func(n int64) {
		mu.Lock()
		seen = append(seen, n)
		mu.Unlock()
	})
	os.MkdirAll(filepath.Join(dir, "partial"), 0o755)
	os.WriteFile(filepath.Join(dir, "partial", "k.deb"), make([]byte, 1000), 0o644)
	waitFor := func(want int64) {
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			last := int64(-1)
			if len(seen) > 0 {
				last = seen[len(seen)-1]
			}
			mu.Unlock()
			if last == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("reports %v, want one of %d", seen, want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitFor(1000)
	os.WriteFile(filepath.Join(dir, "partial", "k.deb"), make([]byte, 3000), 0o644)
	waitFor(3000)
	stop()
	mu.Lock()
	n := len(seen)
	mu.Unlock()
	time.Sleep(50 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != n {
		t.Fatalf("reports after stop: %v", seen[n:])
	}
}
