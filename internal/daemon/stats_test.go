package daemon

import (
	"testing"
	"time"
)

func TestMemUsed(t *testing.T) {
	in := "MemTotal:         500000 kB\nMemFree:          300000 kB\nMemAvailable:     400000 kB\n"
	if got, want := memUsed([]byte(in)), int64(100000<<10); got != want {
		t.Fatalf("memUsed = %d, want %d", got, want)
	}
	if got := memUsed([]byte("MemTotal: 5 kB\n")); got != 0 {
		t.Fatalf("no MemAvailable: %d, want 0", got)
	}
}

// A second stream reading within cpuSampleMinAge must not replace the
// sample the first one averages over.
func TestStatsSampleWindow(t *testing.T) {
	var st statsState
	t0 := time.Now()
	st.put("vm", cpuSample{pid: 7, cpu: time.Second, at: t0})
	st.put("vm", cpuSample{pid: 7, cpu: 2 * time.Second, at: t0.Add(50 * time.Millisecond)})
	p, ok := st.usable("vm", cpuSample{pid: 7, at: t0.Add(time.Second)})
	if !ok || p.cpu != time.Second {
		t.Fatalf("usable = %+v, %v; want the first sample", p, ok)
	}
	if _, ok := st.usable("vm", cpuSample{pid: 8, at: t0.Add(time.Second)}); ok {
		t.Fatal("a sample of another process (a new boot) was usable")
	}
	if _, ok := st.usable("vm", cpuSample{pid: 7, at: t0.Add(time.Minute)}); ok {
		t.Fatal("a minute-old sample was usable")
	}
}
