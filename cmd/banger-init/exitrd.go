package main

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The exitrd: how an InitImage guest's disks end up clean.
//
// *Learned* (systemd 252, Debian 12): systemd-shutdown unmounts what it
// can and remounts "/" read-only, but it never touches mounts below /run,
// so the ext4 under the overlay's upper layer (upperDir, system.cow) was
// left mounted read-write with a dirty journal at every `vm stop`; the
// overlay itself was read-only, the work disk clean. It cannot do better
// from inside the root it is tearing down: the layers stay busy while the
// overlay is mounted.
//
// systemd has a protocol for a root that needs its initramfs to finish
// the job (dracut's "exitrd"): if /run/initramfs/shutdown is executable,
// systemd-shutdown, after its own unmount loop, pivots into /run/initramfs
// (the old root moves to /oldroot; /proc, /sys, /dev and /run are
// bind-mounted in) and executes /shutdown there as PID 1, with the verb
// (poweroff, reboot, halt, kexec) as argv[1]. banger-init is that
// initramfs, so a hard link of its own copy is the shutdown binary
// (exitrdPath, made by handOverToImageInit); exitrdMain does what
// banger-init's own shutdown does in InitBanger mode.
const (
	exitrdDir  = "/run/initramfs"
	exitrdPath = exitrdDir + "/shutdown"
	oldRoot    = "/oldroot"
)

// isExitrd reports whether this process is systemd-shutdown's /shutdown.
func isExitrd() bool {
	return os.Getpid() == 1 && filepath.Base(os.Args[0]) == "shutdown"
}

// exitrdMain stops what systemd spared (our agent, marked with '@'),
// leaves every disk of the old root clean and ends the VM. It never
// returns.
func exitrdMain(args []string) {
	logger.SetPrefix("banger-init exitrd: ")
	if f, err := os.OpenFile("/dev/console", os.O_WRONLY|os.O_APPEND, 0); err == nil {
		logger.SetOutput(f)
	}
	verb := "poweroff"
	if len(args) > 0 {
		verb = args[0]
	}
	cmd := unix.LINUX_REBOOT_CMD_POWER_OFF
	switch verb {
	case "reboot", "kexec":
		cmd = unix.LINUX_REBOOT_CMD_RESTART
	case "halt":
		cmd = unix.LINUX_REBOOT_CMD_HALT
	}
	// The old root's sysfs, before cleanOldRoot unmounts it.
	cmd = rebootCmd(cmd, filepath.Join(oldRoot, "sys"))
	start := time.Now()
	// systemd-shutdown already sent SIGTERM and SIGKILL to everything
	// but the processes marked with '@': our agent, which drops SIGTERM.
	killAll(unix.SIGKILL, 2*time.Second)
	cleanOldRoot(oldRoot)
	unix.Sync()
	logf("%s after %s", verb, time.Since(start).Round(time.Millisecond))
	if err := unix.Reboot(cmd); err != nil {
		logf("reboot(%#x): %v", cmd, err)
	}
	select {}
}

// cleanOldRoot unmounts everything below and at root, deepest and latest
// first, in passes until nothing more goes (a parent is busy until its
// children are gone). *Learned:* the layers' own mounts (lowerDir,
// upperDir) are gone by then (the overlay keeps private clones of them),
// so the one way to get system.cow's ext4 clean is to unmount the overlay
// itself: its last reference drops the upper layer's, and ext4 then
// commits its journal and marks itself clean. With every other process
// killed nothing holds the old root, so plain unmounts succeed. Whatever
// still refuses is remounted read-only if it is a disk filesystem, and
// root is finally detached.
func cleanOldRoot(root string) {
	for pass := 0; pass < 8; pass++ {
		mounts, err := mountsBelow("/proc/self/mountinfo", root)
		if err != nil || len(mounts) == 0 {
			return // all gone
		}
		progress := false
		for _, m := range mounts {
			if err := unix.Unmount(m.path, 0); err == nil {
				if diskFS(m.fstype) {
					logf("unmounted %s (%s)", m.path, m.fstype)
				}
				progress = true
			}
		}
		if !progress {
			break
		}
	}
	mounts, _ := mountsBelow("/proc/self/mountinfo", root)
	for _, m := range mounts {
		if !diskFS(m.fstype) || m.readOnly {
			continue
		}
		if err := unix.Mount("", m.path, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			logf("%s (%s) is still mounted and cannot be remounted read-only: %v", m.path, m.fstype, err)
		}
	}
	if len(mounts) > 0 {
		logf("%d mounts below %s refused to unmount; detaching %s", len(mounts), root, root)
		if err := unix.Unmount(root, unix.MNT_DETACH); err != nil {
			logf("detach %s: %v", root, err)
		}
	}
}

type mountEntry struct {
	path, fstype string
	readOnly     bool
}

// mountsBelow lists the mounts at or below root from a mountinfo file,
// in reverse order of mounting (so an overlay comes before the layers
// mounted ahead of it, and submounts before their parents).
func mountsBelow(mountinfo, root string) ([]mountEntry, error) {
	f, err := os.Open(mountinfo)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, x := range fields {
			if x == "-" {
				sep = i
				break
			}
		}
		if len(fields) < 6 || sep < 6 || sep+1 >= len(fields) {
			continue
		}
		p := unescapeMountPath(fields[4])
		if p != root && !strings.HasPrefix(p, root+"/") {
			continue
		}
		ro := false
		for _, o := range strings.Split(fields[5], ",") {
			ro = ro || o == "ro"
		}
		out = append([]mountEntry{{path: p, fstype: fields[sep+1], readOnly: ro}}, out...)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// diskFS: filesystems whose state on a disk matters at poweroff.
func diskFS(fstype string) bool {
	switch fstype {
	case "ext4", "ext3", "ext2", "overlay", "xfs", "btrfs", "vfat":
		return true
	}
	return false
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			c := s[i+1 : i+4]
			if c[0] >= '0' && c[0] <= '3' && c[1] >= '0' && c[1] <= '7' && c[2] >= '0' && c[2] <= '7' {
				b.WriteByte((c[0]-'0')<<6 | (c[1]-'0')<<3 | (c[2] - '0'))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
