package daemon

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"banger/api"
	"banger/internal/model"
	"banger/internal/vmm/firecracker"
	"banger/internal/vmm/qemu"
)

// A driver without the Shares capability refuses -v, naming vm cp; the
// daemon reads the capability, not the driver's name.
func TestSharesNeedTheCapability(t *testing.T) {
	spec := model.VMSpec{VCPU: 1, MemoryMiB: 256, Shares: []model.Share{{HostPath: "/srv/src", GuestPath: "/mnt/src"}}}
	fc := firecracker.New(firecracker.Options{})
	err := checkCapabilities(fc.Capabilities(), fc.Name(), spec)
	if err == nil || !strings.Contains(err.Error(), "vm cp") || !strings.Contains(err.Error(), "/srv/src") {
		t.Fatalf("firecracker with -v: %v", err)
	}
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Kind != api.KindInvalidArgument {
		t.Fatalf("error kind: %#v", err)
	}
	q := qemu.New(qemu.Options{ShareTransport: "9p"})
	if err := checkCapabilities(q.Capabilities(), q.Name(), spec); err != nil {
		t.Fatalf("qemu with -v: %v", err)
	}
}

func TestParseShares(t *testing.T) {
	if _, err := parseShares([]string{"/a:/mnt/x", "/b:/mnt/x/y"}); err == nil {
		t.Fatal("overlapping guest paths accepted")
	}
	if _, err := parseShares([]string{"rel:/mnt/x"}); err == nil || !strings.Contains(err.Error(), "rel:/mnt/x") {
		t.Fatalf("relative host dir: %v", err)
	}
	dir := t.TempDir()
	sh, err := parseShares([]string{dir + "/:/mnt/x:ro"})
	if err != nil {
		t.Fatal(err)
	}
	if err := resolveSharesFor(context.Background(), sh); err != nil || sh[0].HostPath != dir || !sh[0].ReadOnly || sh[0].UID != 0 {
		t.Fatalf("resolve as root: %+v %v", sh, err)
	}
	sh, _ = parseShares([]string{dir + "/missing:/mnt/x"})
	if err := resolveSharesFor(context.Background(), sh); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("missing dir: %v", err)
	}
	f := dir + "/file"
	os.WriteFile(f, nil, 0o644)
	sh, _ = parseShares([]string{f + ":/mnt/x"})
	if err := resolveSharesFor(context.Background(), sh); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("a file: %v", err)
	}
}

func TestKernelHas(t *testing.T) {
	tree := t.TempDir()
	os.WriteFile(tree+"/modules.order", []byte("kernel/fs/fuse/virtiofs.ko\n"), 0o644)
	os.WriteFile(tree+"/modules.builtin", []byte("kernel/net/9p/9pnet.ko\n"), 0o644)
	if !kernelHas(tree, "virtiofs") || !kernelHas(tree, "9pnet") || kernelHas(tree, "9pnet_virtio") {
		t.Fatal("kernelHas misread the module lists")
	}
}
