package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/guestproto"
)

// Where the overlay's layers stay reachable after switch_root, so shutdown
// can remount them read-only. /run is a tmpfs moved into the new root.
const (
	lowerDir = "/run/banger/lower"
	upperDir = "/run/banger/upper"
)

func mount(src, target, fstype string, flags uintptr, data string) error {
	if err := os.MkdirAll(target, 0o755); err != nil {
		return fmt.Errorf("mkdir %s: %w", target, err)
	}
	if err := unix.Mount(src, target, fstype, flags, data); err != nil {
		return fmt.Errorf("mount %s (%s) on %s: %w", src, fstype, target, err)
	}
	return nil
}

func mountEarly() error {
	for _, m := range []struct {
		src, target, fstype string
		flags               uintptr
		data                string
	}{
		{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
		{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
	} {
		if err := mount(m.src, m.target, m.fstype, m.flags, m.data); err != nil {
			return err
		}
	}
	return nil
}

// modulesGrace is how long findDisks waits for a modules disk once the
// three boot disks are there.
const modulesGrace = 2 * time.Second

// diskSet maps each role to its /dev node. modules is "" when no modules
// disk was found.
type diskSet struct{ rootfs, cow, work, modules string }

// findDisks waits for the three drives, and the modules disk too when
// wantModules (the command line carries banger.modules=). A VMM that sets
// virtio-blk serials (banger-rootfs, banger-cow, banger-work,
// banger-modules) is matched by serial, which no probe order can confuse;
// otherwise the roles follow attach order: vda, vdb, vdc, vdd. A modules
// disk that does not show up is not fatal: the guest boots with the
// initramfs's modules only.
func findDisks(timeout time.Duration, wantModules bool) (diskSet, error) {
	deadline := time.Now().Add(timeout)
	var complete time.Time // when the three boot disks were first all there
	for {
		d, ok, seen := scanDisks("/sys/block")
		if ok {
			if complete.IsZero() {
				complete = time.Now()
			}
			// virtio-mmio disks are probed together, so a modules disk
			// that is not there shortly after the others is not coming.
			if d.modules != "" || !wantModules || time.Since(complete) > modulesGrace {
				logf("disks: rootfs=%s cow=%s work=%s modules=%s", d.rootfs, d.cow, d.work, d.modules)
				return d, nil
			}
		}
		if !ok && time.Now().After(deadline) {
			return diskSet{}, fmt.Errorf("disks did not appear within %s: want %s (rootfs), %s (system.cow), %s (work disk); found %v. Is virtio_blk in the initramfs module list, and did the VMM attach three drives?",
				timeout, guestproto.DevRootfs, guestproto.DevCow, guestproto.DevWork, seen)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func scanDisks(sysBlock string) (d diskSet, ok bool, seen []string) {
	ents, _ := os.ReadDir(sysBlock)
	bySerial := map[string]string{}
	byName := map[string]bool{}
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, "vd") {
			continue
		}
		seen = append(seen, name)
		byName[name] = true
		if s, err := os.ReadFile(filepath.Join(sysBlock, name, "serial")); err == nil {
			bySerial[strings.TrimSpace(string(s))] = "/dev/" + name
		}
	}
	sort.Strings(seen)
	if len(bySerial) > 0 && (bySerial[guestproto.SerialRootfs] != "" || bySerial[guestproto.SerialCow] != "" || bySerial[guestproto.SerialWork] != "") {
		d = diskSet{bySerial[guestproto.SerialRootfs], bySerial[guestproto.SerialCow], bySerial[guestproto.SerialWork], bySerial[guestproto.SerialModules]}
		return d, d.rootfs != "" && d.cow != "" && d.work != "", seen
	}
	d = diskSet{"/dev/" + guestproto.DevRootfs, "/dev/" + guestproto.DevCow, "/dev/" + guestproto.DevWork, ""}
	if byName[guestproto.DevModules] {
		d.modules = "/dev/" + guestproto.DevModules
	}
	return d, byName[guestproto.DevRootfs] && byName[guestproto.DevCow] && byName[guestproto.DevWork], seen
}

// isExt4 reports whether dev carries an ext2/3/4 superblock (magic 0xEF53 at
// byte 1080).
func isExt4(dev string) (bool, error) {
	f, err := os.Open(dev)
	if err != nil {
		return false, err
	}
	defer f.Close()
	var b [2]byte
	if _, err := f.ReadAt(b[:], 1080); err != nil {
		return false, fmt.Errorf("read superblock of %s: %w", dev, err)
	}
	return binary.LittleEndian.Uint16(b[:]) == 0xEF53, nil
}

// mountRoot builds the root filesystem and switches into it: vda read-only
// as the overlay's lower layer, system.cow as its upper layer, then the work
// disk at /root.
func mountRoot(d diskSet) error {
	for _, dev := range []string{d.rootfs, d.cow, d.work} {
		ok, err := isExt4(dev)
		if err != nil {
			return err
		}
		if !ok {
			role := map[string]string{d.rootfs: "image rootfs", d.cow: "system.cow", d.work: "work disk"}[dev]
			return fmt.Errorf("%s (%s) has no ext4 filesystem: the host must format it (mkfs.ext4) before boot; banger-init cannot", dev, role)
		}
	}
	// noload: the lower layer is never written, so never replay its journal
	// (the device is read-only and replay would fail the mount).
	if err := mount(d.rootfs, "/mnt/lower", "ext4", unix.MS_RDONLY, "noload"); err != nil {
		return fmt.Errorf("image rootfs: %w", err)
	}
	if err := mount(d.cow, "/mnt/upper", "ext4", unix.MS_NOATIME, ""); err != nil {
		return fmt.Errorf("system.cow: %w", err)
	}
	for _, dir := range []string{"/mnt/upper/upper", "/mnt/upper/work"} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("system.cow: %w", err)
		}
	}
	if err := mount("overlay", "/mnt/root", "overlay", 0,
		"lowerdir=/mnt/lower,upperdir=/mnt/upper/upper,workdir=/mnt/upper/work"); err != nil {
		return fmt.Errorf("overlay root (is the overlay module in the initramfs?): %w", err)
	}
	// Keep the layers reachable from the new root for shutdown.
	for _, mv := range [][2]string{{"/mnt/lower", lowerDir}, {"/mnt/upper", upperDir}} {
		if err := mount(mv[0], mv[1], "", unix.MS_MOVE, ""); err != nil {
			return err
		}
	}
	for _, dir := range []string{"/proc", "/sys", "/dev", "/run"} {
		if err := mount(dir, "/mnt/root"+dir, "", unix.MS_MOVE, ""); err != nil {
			return err
		}
	}
	if err := switchRoot("/mnt/root"); err != nil {
		return err
	}
	// devpts for ptys (SSH shells), shm, cgroup2: none fatal.
	for _, m := range []struct {
		src, target, fstype string
		flags               uintptr
		data                string
	}{
		{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5"},
		{"shm", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
		{"cgroup2", "/sys/fs/cgroup", "cgroup2", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	} {
		if err := mount(m.src, m.target, m.fstype, m.flags, m.data); err != nil {
			logf("%v", err)
		}
	}
	// With newinstance, /dev/ptmx must point into this devpts.
	if _, err := os.Lstat("/dev/pts/ptmx"); err == nil {
		os.Remove("/dev/ptmx")
		os.Symlink("pts/ptmx", "/dev/ptmx")
	}
	if err := mount(d.work, "/root", "ext4", unix.MS_NOATIME, ""); err != nil {
		return fmt.Errorf("work disk: %w", err)
	}
	os.Chmod("/root", 0o700)
	return nil
}

// mountModules mounts the modules disk read-only at /lib/modules/<release>
// in the final root, shadowing whatever the image has there, and points
// the kernel's module autoloader at the image's modprobe. Nothing here is
// fatal: without it the guest has the initramfs's boot modules only.
func mountModules(dev, release string) {
	if release == "" {
		return
	}
	if dev == "" {
		logf("%s=%s but no modules disk: only the boot modules are available", guestproto.KeyModules, release)
		return
	}
	start := time.Now()
	if ok, err := isExt4(dev); err != nil || !ok {
		logf("modules disk %s: no ext4 filesystem (%v); only the boot modules are available", dev, err)
		return
	}
	target := guestproto.ModulesMountPoint(release)
	// noload: read-only device, never replay a journal.
	if err := mount(dev, target, "ext4", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOATIME, "noload"); err != nil {
		logf("modules disk: %v", err)
		return
	}
	if p := findModprobe(""); p != "" {
		if err := os.WriteFile("/proc/sys/kernel/modprobe", []byte(p), 0); err != nil {
			logf("set the kernel's modprobe to %s: %v", p, err)
		}
	}
	logf("modules disk %s mounted at %s in %s", dev, target, time.Since(start).Round(time.Microsecond))
}

// findModprobe returns the image's modprobe (kmod's or busybox's) under
// root, as a path in the guest, or "" when the image has none.
func findModprobe(root string) string {
	for _, p := range []string{"/sbin/modprobe", "/usr/sbin/modprobe", "/bin/modprobe", "/usr/bin/modprobe"} {
		if st, err := os.Stat(root + p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// switchRoot makes newRoot the root filesystem, as busybox switch_root
// does: move the mount over /, chroot into it. The initramfs contents stay
// in memory (a few MB); not worth a recursive delete.
func switchRoot(newRoot string) error {
	if err := unix.Chdir(newRoot); err != nil {
		return fmt.Errorf("switch root: %w", err)
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("switch root: move %s to /: %w", newRoot, err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("switch root: chroot: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("switch root: %w", err)
	}
	return nil
}

// unmountAll leaves every disk clean: the work disk unmounted, the overlay
// and its upper layer remounted read-only (they stay busy as the root).
func unmountAll() {
	unix.Sync()
	if err := unix.Unmount("/root", 0); err != nil && !errors.Is(err, unix.EINVAL) { // EINVAL: not mounted
		logf("unmount /root: %v; remounting it read-only", err)
		if err := unix.Mount("", "/root", "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			logf("remount /root read-only: %v", err)
		}
	}
	for _, p := range []string{"/", upperDir} {
		if err := unix.Mount("", p, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
			logf("remount %s read-only: %v", p, err)
		}
	}
	unix.Sync()
}
