package vmm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

const kvmGetAPIVersion = 0xAE00 // _IO(KVMIO, 0x00)

// KVMPath is /dev/kvm; a variable so tests can point it elsewhere.
var KVMPath = "/dev/kvm"

// KVM reports whether hardware virtualization through KVMPath can run a
// stock guest kernel, and if not, why.
//
// An openable /dev/kvm is not enough: some hosts (nested sandboxes) provide
// it through kvm_pvm, which only runs PVM-enabled guest kernels; QEMU then
// aborts ("failed to set MSR 0x10a") or hangs before the first console
// byte. So we also want the vmx/svm CPU flag or the kvm_intel/kvm_amd module.
func KVM() (bool, string) {
	f, err := os.OpenFile(KVMPath, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return false, "no " + KVMPath
		}
		return false, fmt.Sprintf("%s not usable: %v", KVMPath, err)
	}
	defer f.Close()
	v, err := unix.IoctlRetInt(int(f.Fd()), kvmGetAPIVersion)
	if err != nil || v != 12 {
		return false, fmt.Sprintf("%s: KVM_GET_API_VERSION = %d, %v (want 12)", KVMPath, v, err)
	}
	if hasHardwareVirt() {
		return true, KVMPath + " usable"
	}
	if _, err := os.Stat("/sys/module/kvm_pvm"); err == nil {
		return false, KVMPath + " is provided by kvm_pvm, which runs only PVM guest kernels (no vmx/svm on this CPU)"
	}
	return false, KVMPath + " opens but the CPU shows no vmx/svm flag and neither kvm_intel nor kvm_amd is loaded"
}

func hasHardwareVirt() bool {
	for _, m := range []string{"/sys/module/kvm_intel", "/sys/module/kvm_amd"} {
		if _, err := os.Stat(m); err == nil {
			return true
		}
	}
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "flags") {
			continue
		}
		for _, fl := range strings.Fields(line) {
			if fl == "vmx" || fl == "svm" {
				return true
			}
		}
		return false
	}
	return false
}

// Tail returns up to the last n lines of the file at path (at most the last
// 64 KiB of it), for error messages such as "guest not ready: <console>".
func Tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const max = 64 << 10
	if fi, err := f.Stat(); err == nil && fi.Size() > max {
		f.Seek(fi.Size()-max, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	b = bytes.TrimRight(b, "\n")
	lines := bytes.Split(b, []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
