package procstat

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	// A command name with spaces and a ')' must not shift the fields.
	line := "4242 (qemu) x (y)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 123 0 0"
	got, err := parseStatCPU([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if want := 3 * time.Second; got != want {
		t.Fatalf("cpu = %v, want %v (utime 250 + stime 50 ticks)", got, want)
	}
	if _, err := parseStatCPU([]byte("4242 (qemu) S 1 2")); err == nil {
		t.Fatal("short stat line: no error")
	}
}

func TestSelf(t *testing.T) {
	// Burn some CPU so the own process's time is above zero.
	end := time.Now().Add(50 * time.Millisecond)
	for x := 0; time.Now().Before(end); x++ {
	}
	cpu, err := CPUTime(os.Getpid())
	if err != nil || cpu <= 0 {
		t.Fatalf("CPUTime(self) = %v, %v; want > 0", cpu, err)
	}
	rss, err := RSS(os.Getpid())
	if err != nil || rss < 1<<20 {
		t.Fatalf("RSS(self) = %d, %v; want at least 1 MiB", rss, err)
	}
	devs, err := NetDev()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := devs["lo"]; !ok {
		t.Fatalf("NetDev: no lo in %v", devs)
	}
}

func TestParseNetDev(t *testing.T) {
	in := `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0
tap-ab12:  5000      50    0    0    0     0          0         0      700       7    0    0    0     0       0          0
`
	m, err := parseNetDev([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := m["tap-ab12"], (NetCounters{RxBytes: 5000, RxPackets: 50, TxBytes: 700, TxPackets: 7}); got != want {
		t.Fatalf("tap-ab12 = %+v, want %+v", got, want)
	}
	if _, err := parseNetDev([]byte("h1\nh2\nbad line\n")); err == nil {
		t.Fatal("line without ':': no error")
	}
}

func TestAllocated(t *testing.T) {
	dir := t.TempDir()
	sparse := filepath.Join(dir, "sparse")
	f, err := os.Create(sparse)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(64 << 20); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 1<<20), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	n, err := Allocated(sparse)
	if err != nil {
		t.Fatal(err)
	}
	// 1 MiB written of a 64 MiB apparent size: allocated is about 1 MiB.
	if n < 1<<20 || n >= 8<<20 {
		t.Fatalf("Allocated = %d, want about 1 MiB of a 64 MiB sparse file", n)
	}
	if n, err := Allocated(filepath.Join(dir, "missing")); n != 0 || err != nil {
		t.Fatalf("Allocated(missing) = %d, %v; want 0, nil", n, err)
	}
}

func TestMemInfo(t *testing.T) {
	p := filepath.Join(t.TempDir(), "meminfo")
	if err := os.WriteFile(p, []byte("MemTotal:       24588020 kB\nMemFree:  100 kB\nMemAvailable:   bad kB\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := MemInfo(p, "MemTotal"); err != nil || got != 24588020<<10 {
		t.Errorf("MemTotal = %d, %v; want %d", got, err, int64(24588020)<<10)
	}
	if _, err := MemInfo(p, "MemAvailable"); err == nil || !strings.Contains(err.Error(), `"bad"`) {
		t.Errorf("a bad value: %v", err)
	}
	if _, err := MemInfo(p, "SwapTotal"); err == nil || !strings.Contains(err.Error(), "no SwapTotal") {
		t.Errorf("a missing field: %v", err)
	}
}
