package main

import (
	"regexp"
	"strings"
	"testing"
)

// TestVMGuestModules: every module of the VM's kernel is in the guest. The
// modules disk is mounted read-only at /lib/modules/<release>, modprobe
// loads a module the initramfs does not carry, modinfo reads its metadata,
// and the kernel's autoloader finds modprobe.
func TestVMGuestModules(t *testing.T) {
	e := newVMEnv(t)
	e.mustRun(t, "vm", "create", "--image", "busybox", "--name", "mods")
	mp := "/lib/modules/" + e.release
	out := e.mustRun(t, "vm", "exec", "mods", "--", "sh", "-c",
		"grep ' "+mp+" ' /proc/mounts; modprobe br_netfilter && lsmod | grep -c '^br_netfilter'; modinfo overlay | grep -c '^filename:'; cat /proc/sys/kernel/modprobe")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !regexp.MustCompile(`^/dev/vd[a-z] `+regexp.QuoteMeta(mp)+` ext4 ro[, ]`).MatchString(lines[0]) ||
		lines[1] != "1" || lines[2] != "1" || !strings.HasSuffix(lines[3], "/modprobe") {
		t.Fatalf("modules in the guest:\n%s", out)
	}
	console := e.mustRun(t, "vm", "logs", "mods")
	if m := regexp.MustCompile(`modules disk \S+ mounted at \S+ in (\S+)`).FindStringSubmatch(console); m == nil {
		t.Errorf("console has no modules mount line:\n%s", tail(console, 30))
	} else {
		t.Logf("modules disk mount in the guest: %s", m[1])
	}
	e.mustRun(t, "vm", "rm", "-f", "mods")
}
