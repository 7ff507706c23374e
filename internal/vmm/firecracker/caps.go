package firecracker

import "banger/internal/vmm"

// MaxVCPU is Firecracker's own limit (machine-config vcpu_count ≤ 32).
const MaxVCPU = 32

// MaxMemoryMiB bounds mem_size_mib as the QEMU driver does.
const MaxMemoryMiB = 64 << 10

// DefaultKernel is the catalog kernel Firecracker boots for images that
// ask for the default one: Debian's cloud kernel finds its virtio-mmio
// devices only through ACPI (CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES is off),
// while microvm-6.1, built by banger from Debian's kernel source, takes
// them from the command line as Firecracker announces them. Its
// Firecracker-style boot (ACPI off, command-line devices, no modules) is
// verified here under QEMU; Firecracker itself never ran here (no KVM).
// Firecracker's own CI kernels (firecracker-6.1, firecracker-5.10) stay in
// the catalog, unreachable from this project's hosts.
const DefaultKernel = "microvm-6.1"

// Capabilities: ELF vmlinux only, hybrid vsock for the agent, a tap; never
// booted on this project's hosts (no KVM), so not verified.
func (d *Driver) Capabilities() vmm.Capabilities {
	return vmm.Capabilities{
		KernelFormats: []string{vmm.KernelVmlinux},
		DefaultKernel: DefaultKernel,
		MaxVCPU:       MaxVCPU,
		MinMemoryMiB:  vmm.MinMemoryMiB,
		MaxMemoryMiB:  MaxMemoryMiB,
		Agent:         vmm.AgentVsock,
		Network:       vmm.NetworkTap,
		// PATCH /vm, PUT /snapshot/create and /snapshot/load
		// (snapshot.go), contract-tested against the stand-in only.
		Snapshots: true,
		Verified:  false,
		// Firecracker has no shared-filesystem device (virtio-fs was
		// declined upstream, firecracker#1180).
		Shares:   false,
		NoShares: "Firecracker has no shared-filesystem device: copy files in and out with `banger vm cp` instead",
	}
}
