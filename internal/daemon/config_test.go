package daemon

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/api"
	"banger/internal/kernelcat"
	"banger/internal/vmm"
	"banger/internal/vmm/firecracker"
)

func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "config.toml")
	os.WriteFile(p, []byte("state_dir = \"/srv/banger\"\nbridge_ip = \"10.5.0.1/16\"\nvmm = \"qemu\"\nready_timeout = \"45s\"\n"), 0o644)
	c := DefaultConfig()
	if err := LoadConfigFile(&c, p); err != nil {
		t.Fatal(err)
	}
	if err := c.Finish(); err != nil {
		t.Fatal(err)
	}
	if c.StateDir != "/srv/banger" || c.VMM != "qemu" || c.BridgePrefix().Bits() != 16 || c.readyTimeout().Seconds() != 45 {
		t.Fatalf("%+v", c)
	}
	if c.Socket != "/run/banger/banger.sock" {
		t.Fatalf("socket default %q", c.Socket)
	}
	os.WriteFile(p, []byte("stat_dir = \"/x\"\n"), 0o644)
	if err := LoadConfigFile(&c, p); err == nil || !strings.Contains(err.Error(), "stat_dir") {
		t.Fatalf("unknown key: %v", err)
	}
	for _, bad := range []func(*Config){
		func(c *Config) { c.BridgeIP = "10.0.0.0/24" },
		func(c *Config) { c.BridgeIP = "10.0.0.1/31" },
		func(c *Config) { c.LogFormat = "xml" },
		func(c *Config) { c.ReadyTimeout = "soon" },
		func(c *Config) { c.BridgeName = "a-very-long-bridge-name" },
	} {
		c := DefaultConfig()
		bad(&c)
		if err := c.Finish(); err == nil {
			t.Errorf("accepted %+v", c)
		}
	}
}

// stubDriver only has capabilities: enough for defaultKernel.
type stubDriver struct{ vmm.Driver }

func (s stubDriver) Capabilities() vmm.Capabilities {
	return vmm.Capabilities{DefaultKernel: "firecracker-6.1"}
}

func (s stubDriver) Name() string { return "stub" }

func TestDefaultKernelPerDriver(t *testing.T) {
	d := &Daemon{}
	if got := d.defaultKernel(""); got != kernelcat.DefaultKernel {
		t.Fatalf("no driver: %s", got)
	}
	d.driver = stubDriver{}
	if got := d.defaultKernel(""); got != "firecracker-6.1" {
		t.Fatalf("driver's default kernel: %s", got)
	}
	if got := d.defaultKernel("mine"); got != "mine" {
		t.Fatalf("image's own kernel replaced: %s", got)
	}
	// The config's default_kernel wins over the driver's, for images that
	// use the default only.
	d.cfg.DefaultKernel = "microvm-6.1"
	if got := d.defaultKernel(""); got != "microvm-6.1" {
		t.Fatalf("default_kernel: %s", got)
	}
	if got := d.defaultKernel(kernelcat.DefaultKernel); got != "microvm-6.1" {
		t.Fatalf("default_kernel for an image recording the default: %s", got)
	}
	if got := d.defaultKernel("mine"); got != "mine" {
		t.Fatalf("default_kernel replaced an image's own kernel: %s", got)
	}
	cat, _ := kernelcat.LoadEmbedded()
	if _, ok := cat.Lookup(firecracker.DefaultKernel); !ok {
		t.Fatalf("%s is not in the kernel catalog", firecracker.DefaultKernel)
	}
}

// The vmm setting is checked against the drivers the daemon was given, not
// a list of names in the config code.
func TestUnknownVMMRefused(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.RuntimeDir = filepath.Join(dir, "run")
	cfg.VMM = "vbox"
	if err := cfg.Finish(); err != nil {
		t.Fatal(err)
	}
	_, err := New(context.Background(), cfg, io.Discard, WithDrivers(stubDriver{}))
	if err == nil || !strings.Contains(err.Error(), `"vbox"`) || !strings.Contains(err.Error(), "stub") {
		t.Fatalf("vmm=vbox: %v", err)
	}
	if _, err := os.Stat(cfg.StateDir); err == nil {
		t.Fatal("a refused config created the state dir")
	}
}

// limitDriver has small limits and no guest network.
type limitDriver struct{ vmm.Driver }

func (limitDriver) Name() string { return "tiny" }
func (limitDriver) Capabilities() vmm.Capabilities {
	return vmm.Capabilities{MaxVCPU: 2, MinMemoryMiB: 64, MaxMemoryMiB: 1024, Network: vmm.NetworkNone}
}

// A create over the selected hypervisor's limits is refused before any
// reservation, naming the value and the hypervisor.
func TestCreateRefusedByDriverLimits(t *testing.T) {
	s := &VMService{d: &Daemon{driver: limitDriver{}}}
	for _, tc := range []struct {
		p    api.VMCreateParams
		want string
	}{
		{api.VMCreateParams{VCPU: 4}, "vcpu count 4"},
		{api.VMCreateParams{VCPU: 1, MemoryMiB: 2048}, "memory 2048 MiB"},
		{api.VMCreateParams{VCPU: 1, NAT: true}, "--nat"},
	} {
		_, err := s.validateCreate(tc.p)
		if api.KindOf(err) != api.KindInvalidArgument || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "tiny") {
			t.Errorf("%+v: %v", tc.p, err)
		}
	}
	if _, err := s.validateCreate(api.VMCreateParams{VCPU: 2, MemoryMiB: 512}); err != nil {
		t.Fatalf("within limits: %v", err)
	}
}

// doctor names the default kernel and the reason: the config, else the
// driver, else the catalog (with how to opt into the built kernel).
func TestDoctorKernelChecks(t *testing.T) {
	detail := func(d *Daemon, name string) string {
		for _, c := range d.kernelChecks() {
			if c.Name == name {
				return c.Detail
			}
		}
		t.Fatalf("no %s check", name)
		return ""
	}
	d := &Daemon{}
	if got := detail(d, "default-kernel"); !strings.HasPrefix(got, kernelcat.DefaultKernel+": ") || !strings.Contains(got, "`banger kernel pull microvm-6.1`") {
		t.Fatalf("no driver, no config: %s", got)
	}
	// Pulled here: the built kernel is the default, and doctor says how
	// to go back.
	kd := kernelcat.Dir(t.TempDir(), builtKernel)
	os.MkdirAll(kd, 0o755)
	os.WriteFile(filepath.Join(kd, kernelcat.ManifestFile), []byte("{}"), 0o644)
	d.kernels = &KernelService{dir: filepath.Dir(kd)}
	if got := detail(d, "default-kernel"); !strings.HasPrefix(got, "microvm-6.1: built here") || !strings.Contains(got, `default_kernel = "debian-cloud-amd64"`) {
		t.Fatalf("built kernel pulled: %s", got)
	}
	d.kernels = nil
	d.driver = stubDriver{}
	if got := detail(d, "default-kernel"); !strings.HasPrefix(got, "firecracker-6.1: the stub driver's choice") {
		t.Fatalf("driver: %s", got)
	}
	d.cfg.DefaultKernel = "microvm-6.1"
	if got := detail(d, "default-kernel"); got != "microvm-6.1: the config's default_kernel" {
		t.Fatalf("config: %s", got)
	}
	if got := detail(d, "firecracker-style"); !strings.Contains(got, "not Firecracker itself") {
		t.Fatalf("firecracker-style: %s", got)
	}
}

// The built kernel becomes the default once it is pulled here (and only
// then: a first `vm run` must not wait for a kernel build); the config's
// default_kernel still decides when set, the cloud kernel included.
func TestDefaultKernelBuiltOncePulled(t *testing.T) {
	dir := t.TempDir()
	d := &Daemon{kernels: &KernelService{dir: dir}}
	if got := d.defaultKernel(""); got != kernelcat.DefaultKernel {
		t.Fatalf("nothing pulled: %s", got)
	}
	kd := kernelcat.Dir(dir, builtKernel)
	if err := os.MkdirAll(kd, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(kd, kernelcat.ManifestFile), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := d.defaultKernel(""); got != builtKernel {
		t.Fatalf("%s pulled: default %s", builtKernel, got)
	}
	if got := d.defaultKernel("mine"); got != "mine" {
		t.Fatalf("an image's own kernel replaced: %s", got)
	}
	d.cfg.DefaultKernel = kernelcat.DefaultKernel
	if got := d.defaultKernel(""); got != kernelcat.DefaultKernel {
		t.Fatalf("default_kernel pins the cloud kernel: %s", got)
	}
}
