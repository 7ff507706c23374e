package main

import (
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
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
	if m := regexp.MustCompile(`ready in \S+ .*waited (\S+) for the modules disk`).FindString(console); m != "" {
		t.Logf("banger-init: %s", m)
	}
	for _, l := range strings.Split(e.log.String(), "\n") {
		if strings.Contains(l, "stage=prepare_disks") && strings.Contains(l, "op=vm.create") {
			t.Logf("daemon: %s", l) // prev_stage_ms is prepare_modules
		}
	}
	e.mustRun(t, "vm", "rm", "-f", "mods")
}

// guestClockOffset returns guest minus host wall clock in whole seconds,
// bracketing the guest's reading between two host readings.
func guestClockOffset(t *testing.T, e *vmEnv, name string) int64 {
	t.Helper()
	before := time.Now().Unix()
	out := e.mustRun(t, "vm", "exec", name, "--", "date", "+%s")
	after := time.Now().Unix()
	g, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
	if err != nil {
		t.Fatalf("guest date: %q", out)
	}
	switch {
	case g < before:
		return g - before
	case g > after:
		return g - after
	}
	return 0
}

// TestVMGuestClockAndBasics: the guest's clock is the host's right after
// create, after a restart and after the daemon re-adopts the VM (which
// corrects a clock set wrong meanwhile); and every boot gives the guest
// what a workload expects: cgroup2, /dev/shm, devpts, a 1777 /tmp, a PATH,
// /etc/hosts, and a machine id of its own that survives a restart.
func TestVMGuestClockAndBasics(t *testing.T) {
	e := newVMEnv(t)
	e.mustRun(t, "vm", "create", "--image", "busybox", "--name", "real")
	if off := guestClockOffset(t, e, "real"); off < -2 || off > 2 {
		t.Errorf("guest clock off by %d s right after create", off)
	}
	const basics = `set -e
grep -c ' /sys/fs/cgroup cgroup2 ' /proc/mounts
grep ' /dev/pts devpts ' /proc/mounts | grep -c 'gid=5,mode=620,ptmxmode=666'
grep -c ' /dev/shm tmpfs ' /proc/mounts
stat -c %a /tmp /dev/shm
echo "$PATH"
grep -cE '^127\.0\.0\.1[[:space:]]+localhost' /etc/hosts
grep -cE '[[:space:]]real( |$)' /etc/hosts
cat /etc/machine-id`
	check := func(when string) string {
		out := e.mustRun(t, "vm", "exec", "real", "--", "sh", "-c", basics)
		l := strings.Split(strings.TrimSpace(out), "\n")
		if len(l) != 9 || l[0] != "1" || l[1] != "1" || l[2] != "1" || l[3] != "1777" || l[4] != "1777" ||
			!strings.Contains(l[5], "/usr/sbin") || !strings.Contains(l[5], "/bin") || l[6] != "1" || l[7] != "1" ||
			!regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(l[8]) {
			t.Fatalf("%s: basics:\n%s", when, out)
		}
		return l[8]
	}
	id := check("first boot")

	e.mustRun(t, "vm", "restart", "real")
	if got := check("after restart"); got != id {
		t.Errorf("machine id changed across a restart: %s then %s", id, got)
	}
	if off := guestClockOffset(t, e, "real"); off < -2 || off > 2 {
		t.Errorf("guest clock off by %d s after restart", off)
	}

	// Set the guest's clock wrong, kill the daemon; the next one re-adopts
	// the VM and corrects it.
	e.mustRun(t, "vm", "exec", "real", "--", "date", "-s", "@1000000000")
	if off := guestClockOffset(t, e, "real"); off > -1e8 {
		t.Fatalf("date -s did not set the guest clock back (offset %d s)", off)
	}
	e.cmd.Process.Signal(syscall.SIGKILL)
	e.cmd.Wait()
	e.daemonProc = startDaemonProcArgs(t, e.stateDir, e.runDir, "--netns", e.ns)
	deadline := time.Now().Add(60 * time.Second)
	for {
		off := guestClockOffset(t, e, "real")
		if off >= -2 && off <= 2 {
			t.Logf("guest clock right %s after the daemon restart", time.Since(deadline.Add(-60*time.Second)).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("guest clock still off by %d s a minute after the daemon re-adopted it", off)
		}
		time.Sleep(500 * time.Millisecond)
	}
	e.mustRun(t, "vm", "rm", "-f", "real")
}
