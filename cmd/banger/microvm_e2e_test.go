package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"banger/internal/testenv"
)

// microVMKernel is the built kernel (catalog microvm-6.1, a debsrc entry),
// pulled once per test binary through the smoke suite's build cache, so
// the kernel is built once per host (source version + config hash) and CI
// reuses it between runs.
var microVMKernel struct {
	once sync.Once
	root string // removed by TestMain
	dir  string
	err  error
}

// kernelBuildCache is the build cache the smoke suite uses too (its
// default SMOKE_CACHE; TestMain points XDG_CACHE_HOME at a temp dir, so
// that is not consulted).
func kernelBuildCache() string {
	c := os.Getenv("SMOKE_CACHE")
	if c == "" {
		c = "/var/cache/banger-smoke"
	}
	return filepath.Join(c, "kbuild")
}

func pulledMicroVMKernel(t *testing.T) string {
	t.Helper()
	testenv.RequireTool(t, "make", "gcc", "flex", "bison", "bc")
	testenv.RequireFile(t, "/usr/include/gelf.h", "libelf-dev")
	microVMKernel.once.Do(func() {
		dir, err := os.MkdirTemp("", "banger-mvk")
		if err != nil {
			microVMKernel.err = err
			return
		}
		microVMKernel.root = dir
		state := filepath.Join(dir, "state")
		d := startDaemonProcArgs(t, state, filepath.Join(dir, "run"), "--kernel-build-cache", kernelBuildCache())
		if _, stderr, err := d.run("kernel", "pull", "microvm-6.1"); err != nil {
			microVMKernel.err = fmt.Errorf("kernel pull microvm-6.1: %v: %s\n%s", err, stderr, tail(d.log.String(), 20))
		}
		d.cmd.Process.Signal(syscall.SIGTERM)
		d.cmd.Wait()
		microVMKernel.dir = filepath.Join(state, "kernels", "microvm-6.1")
	})
	if microVMKernel.err != nil {
		t.Fatal(microVMKernel.err)
	}
	return microVMKernel.dir
}

// The whole VM lifecycle with the kernel banger builds, booted
// Firecracker-style: QEMU microvm with ACPI off, the virtio-mmio devices
// announced on the kernel command line, nothing loaded to boot (what a
// guest boots with is built in); the modules the kernel does have
// (Docker's network stack) come from its modules disk on demand. The
// closest to a Firecracker guest a host without KVM can run.
func TestVMLifecycleMicroVMKernel(t *testing.T) {
	needVMHost(t)
	kdir := pulledMicroVMKernel(t)
	var m struct {
		Boot    string   `json:"boot"`
		Release string   `json:"release"`
		Modules []string `json:"modules"`
	}
	b, err := os.ReadFile(filepath.Join(kdir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &m); err != nil || m.Boot != "mmio" || len(m.Modules) != 0 {
		t.Fatalf("manifest: %+v %v", m, err)
	}
	e := newVMEnvKernel(t, kdir, "--default-kernel", "microvm-6.1")
	e.mustRun(t, "vm", "create", "--image", "busybox", "--name", "fc1")
	vm := e.inspect(t, "fc1")
	if vm["kernel"] != "microvm-6.1" {
		t.Fatalf("VM kernel %v, want microvm-6.1 (the daemon's default_kernel)", vm["kernel"])
	}
	// The VMM runs without ACPI.
	pid := int(vm["pid"].(float64))
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), "acpi=off") {
		t.Fatalf("VMM command line lacks acpi=off: %q %v", strings.ReplaceAll(string(cmdline), "\x00", " "), err)
	}
	// In the guest: this kernel, its devices from the command line, no
	// ACPI, no module loaded by the boot.
	if out := e.mustRun(t, "vm", "exec", "fc1", "--", "uname", "-r"); strings.TrimSpace(out) != m.Release {
		t.Fatalf("uname -r = %q, want %q", out, m.Release)
	}
	out := e.mustRun(t, "vm", "exec", "fc1", "--", "cat", "/proc/cmdline")
	if !strings.Contains(out, "virtio_mmio.device=") {
		t.Fatalf("guest command line announces no virtio-mmio device: %q", out)
	}
	out, _, _ = e.run("vm", "exec", "fc1", "--", "sh", "-c", "ls /sys/firmware/acpi 2>&1; wc -l < /proc/modules")
	if !strings.Contains(out, "No such file") || !strings.HasSuffix(out, "\n0\n") {
		t.Fatalf("guest has ACPI, or its boot loaded modules: %q", out)
	}
	// Its modules disk: br_netfilter (and bridge, llc) load on demand;
	// the free page reporting balloon is built in and bound.
	out = e.mustRun(t, "vm", "exec", "fc1", "--", "sh", "-c", "modprobe br_netfilter && lsmod | cut -d' ' -f1 | sort | tr '\n' ' '; ls /sys/bus/virtio/drivers/virtio_balloon | grep -c '^virtio'")
	if !strings.Contains(out, "br_netfilter bridge llc") || !strings.HasSuffix(out, " 1\n") {
		t.Fatalf("modprobe br_netfilter, lsmod, balloon: %q", out)
	}
	// The work disk and the system overlay persist over stop/start.
	e.mustRun(t, "vm", "exec", "fc1", "--", "sh", "-c", "echo work > /root/f && echo sys > /etc/x")
	e.mustRun(t, "vm", "stop", "fc1")
	if st := e.inspect(t, "fc1")["state"]; st != "stopped" {
		t.Fatalf("after stop: state %v", st)
	}
	e.mustRun(t, "vm", "start", "fc1")
	if out := e.mustRun(t, "vm", "exec", "fc1", "--", "cat", "/root/f", "/etc/x"); out != "work\nsys\n" {
		t.Fatalf("after restart: %q", out)
	}
	e.mustRun(t, "vm", "rm", "-f", "fc1")
	var vms []any
	json.Unmarshal([]byte(e.mustRun(t, "vm", "ls", "-a", "-o", "json")), &vms)
	if len(vms) != 0 {
		t.Fatalf("rm left VMs: %v", vms)
	}
}
