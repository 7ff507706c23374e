package main

import (
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// rebootCmd turns a power-off into a reboot on a machine without ACPI: a
// kernel booted Firecracker-style (QEMU microvm with acpi=off, or
// Firecracker) has no way to power the machine off, so reboot(POWER_OFF)
// only halts the CPU and the VMM keeps running. A reboot ends the VM
// instead: QEMU runs with -no-reboot and the guest with reboot=t, and
// Firecracker exits when its guest reboots. sysfs is where sysfs is
// mounted; when it is not mounted (no /kernel under it) nothing is known
// and cmd is kept.
func rebootCmd(cmd int, sysfs string) int {
	if cmd != unix.LINUX_REBOOT_CMD_POWER_OFF {
		return cmd
	}
	if _, err := os.Stat(filepath.Join(sysfs, "kernel")); err != nil {
		return cmd
	}
	if _, err := os.Stat(filepath.Join(sysfs, "firmware", "acpi")); err == nil {
		return cmd
	}
	return unix.LINUX_REBOOT_CMD_RESTART
}
