package qemu

import "banger/internal/vmm"

// MaxVCPU is what banger's microvm command line supports: QEMU's microvm
// takes more, but the guest contract is tested up to this.
const MaxVCPU = vmm.MaxVCPULimit

// MaxMemoryMiB keeps TCG guests (and a typo's 1 TiB) within reason.
const MaxMemoryMiB = 64 << 10

// Capabilities: bzImage kernels (QEMU decompresses them), a tap device,
// the agent over vhost-vsock or virtio-serial, snapshots, verified on this
// project's hosts under TCG.
func (d *Driver) Capabilities() vmm.Capabilities {
	return vmm.Capabilities{
		KernelFormats: []string{vmm.KernelBzImage},
		MaxVCPU:       MaxVCPU,
		MinMemoryMiB:  vmm.MinMemoryMiB,
		MaxMemoryMiB:  MaxMemoryMiB,
		Agent:         d.AgentMode(),
		Network:       vmm.NetworkTap,
		// Pause/resume (QMP stop/cont), state saved by migration to an
		// fd and restored with -incoming fd:.
		Snapshots: true,
		// virtio-balloon-device,free-page-reporting=on (QEMU ≥ 5.1).
		FreePageReporting: true,
		Verified:          true,
		// Host directories over virtio-fs (virtiofsd) or, without one,
		// QEMU's own 9p server.
		Shares:         true,
		ShareTransport: d.shareTransport(),
	}
}
