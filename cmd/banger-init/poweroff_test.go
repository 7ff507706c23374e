package main

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestRebootCmdWithoutACPI(t *testing.T) {
	sys := t.TempDir()
	// sysfs not mounted: keep the request.
	if got := rebootCmd(unix.LINUX_REBOOT_CMD_POWER_OFF, sys); got != unix.LINUX_REBOOT_CMD_POWER_OFF {
		t.Fatalf("unknown sysfs: %#x", got)
	}
	os.MkdirAll(filepath.Join(sys, "kernel"), 0o755)
	os.MkdirAll(filepath.Join(sys, "firmware"), 0o755)
	if got := rebootCmd(unix.LINUX_REBOOT_CMD_POWER_OFF, sys); got != unix.LINUX_REBOOT_CMD_RESTART {
		t.Fatalf("no ACPI: power off must become a reboot, got %#x", got)
	}
	if got := rebootCmd(unix.LINUX_REBOOT_CMD_HALT, sys); got != unix.LINUX_REBOOT_CMD_HALT {
		t.Fatalf("halt changed: %#x", got)
	}
	os.MkdirAll(filepath.Join(sys, "firmware", "acpi"), 0o755)
	if got := rebootCmd(unix.LINUX_REBOOT_CMD_POWER_OFF, sys); got != unix.LINUX_REBOOT_CMD_POWER_OFF {
		t.Fatalf("with ACPI: %#x", got)
	}
}
