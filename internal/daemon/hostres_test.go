package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/api"
	"banger/internal/vmm/vmmtest"
)

// Sizes against the host: a disk larger than the state dir's free space
// is refused at create naming the flag and the free space; memory over
// MemAvailable is refused at start naming it, and the failed create
// leaves no VM behind. Both within the driver's limits, which come first.
func TestSizesAgainstHost(t *testing.T) {
	tdrv := vmmtest.New()
	l := newLifecycle(t, tdrv, tdrv, nil)
	var vm api.VM
	err := l.call(api.MethodVMCreate, api.VMCreateParams{Name: "big", WorkDiskSize: "2T", NoStart: true}, &vm)
	if !api.IsKind(err, api.KindInvalidArgument) || !strings.Contains(err.Error(), "--work-disk-size 2T") || !strings.Contains(err.Error(), "free") {
		t.Fatalf("2 TiB work disk: %v", err)
	}

	meminfo := filepath.Join(t.TempDir(), "meminfo")
	os.WriteFile(meminfo, []byte("MemTotal:        1048576 kB\nMemFree:          65536 kB\nMemAvailable:     131072 kB\n"), 0o644)
	old := memInfoPath
	memInfoPath = meminfo
	defer func() { memInfoPath = old }()
	err = l.call(api.MethodVMCreate, api.VMCreateParams{Name: "fat", MemoryMiB: 256, SystemOverlaySize: "16M", WorkDiskSize: "128M"}, &vm)
	if !api.IsKind(err, api.KindInvalidArgument) || !strings.Contains(err.Error(), "memory 256 MiB: the host has 128 MiB available (MemAvailable") {
		t.Fatalf("256 MiB on a host with 128 available: %v", err)
	}
	if err := l.call(api.MethodVMCreate, api.VMCreateParams{Name: "fat", MemoryMiB: 9999, NoStart: true}, &vm); !api.IsKind(err, api.KindInvalidArgument) || !strings.Contains(err.Error(), "this hypervisor allows") {
		t.Fatalf("over the driver's limit: %v", err)
	}
	// Within both: boots.
	if err := l.call(api.MethodVMCreate, api.VMCreateParams{Name: "fits", MemoryMiB: 64, SystemOverlaySize: "16M", WorkDiskSize: "128M"}, &vm); err != nil {
		t.Fatalf("64 MiB: %v", err)
	}
}

// vm.exec collects at most MaxExecOutput a stream: a command printing
// more is stopped and the call fails saying so; the VM keeps answering.
func TestExecOutputCapped(t *testing.T) {
	tdrv := vmmtest.New()
	l := newLifecycle(t, tdrv, tdrv, nil)
	l.mustCreate("flood")
	res, err := l.exec("flood", "yes | head -c 100000000")
	if !api.IsKind(err, api.KindInvalidArgument) || !strings.Contains(err.Error(), "more than 4 MiB") {
		t.Fatalf("100 MB of output: %+v %v", len(res.Stdout), err)
	}
	if res, err := l.exec("flood", "head -c 4194304 /dev/zero"); err != nil || len(res.Stdout) != MaxExecOutput {
		t.Fatalf("exactly the cap: %d bytes, %v", len(res.Stdout), err)
	}
	l.mustExec("flood")
}
