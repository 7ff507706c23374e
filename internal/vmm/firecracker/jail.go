package firecracker

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"banger/internal/vmm"
)

// Firecracker's jailer (docs/jailer.md in the Firecracker repository):
//
//	jailer --id ID --exec-file FIRECRACKER --uid UID --gid GID
//	       --chroot-base-dir BASE -- FIRECRACKER-ARGS…
//
// It makes BASE/<basename of exec-file>/ID/root, copies the binary there,
// creates the device nodes Firecracker needs (/dev/kvm, /dev/net/tun),
// joins cgroups, chroots, drops to UID:GID and execs Firecracker with
// `--id ID` and its start-time arguments before FIRECRACKER-ARGS. Every
// path Firecracker is given (API socket, logger, metrics, kernel, initrd,
// drives, the vsock socket) is then inside the chroot; the files must be
// there before the API calls name them, hard-linked (so the jail is built
// under the VM dir: a link cannot cross filesystems) and usable by UID.
// Without KVM and a jailer binary this path is exercised by the stand-in
// in the tests only (contract-tested, unverified on a real jailer).

// DefaultJailer is looked up on PATH; found, Firecracker runs under it.
const DefaultJailer = "jailer"

// jailDirName is the chroot base dir inside the VM dir.
const jailDirName = "jail"

// jail is one VM's chroot: where it is on the host, and the names the
// jailed Firecracker sees.
type jail struct {
	id   string // --id: the VM id, cut to what the jailer allows
	base string // --chroot-base-dir
	root string // base/<exec name>/id/root
	uid  int
	gid  int
}

func newJail(s vmm.Spec, bin string, uid, gid int) jail {
	id := jailID(s.ID)
	base := filepath.Join(s.Dir, jailDirName)
	return jail{id: id, base: base, root: filepath.Join(base, filepath.Base(bin), id, "root"), uid: uid, gid: gid}
}

// jailID keeps [A-Za-z0-9-] of id, at most 64 characters (the jailer's
// rule for --id).
func jailID(id string) string {
	b := []byte{}
	for _, c := range []byte(id) {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' {
			b = append(b, c)
		}
	}
	if len(b) > 64 {
		b = b[:64]
	}
	if len(b) == 0 {
		return "vm"
	}
	return string(b)
}

// host is where the jailed path p ("/x") is on the host.
func (j jail) host(p string) string { return filepath.Join(j.root, p) }

// args is the jailer's command line for Firecracker binary bin.
func (j jail) args(bin, apiSock string) []string {
	return []string{"--id", j.id, "--exec-file", bin,
		"--uid", strconv.Itoa(j.uid), "--gid", strconv.Itoa(j.gid),
		"--chroot-base-dir", j.base, "--", "--api-sock", apiSock}
}

// prepare builds the chroot for s and returns the Spec Firecracker is
// configured with (every path as seen inside the jail). Earlier boots'
// jails are removed first (links only: the VM's files stay). Writable
// disks are handed to uid:gid (0600); read-only files (kernel, initrd,
// the image's rootfs, shared by VMs) get gid group-read, so the jailed
// process opens what it needs and nothing else.
func (j jail) prepare(s vmm.Spec) (vmm.Spec, error) {
	if err := os.RemoveAll(j.base); err != nil {
		return s, err
	}
	if err := os.MkdirAll(j.root, 0o750); err != nil {
		return s, err
	}
	// The jailed user walks to its root: base and its children.
	for d := j.root; ; d = filepath.Dir(d) {
		if err := os.Chown(d, 0, j.gid); err != nil {
			return s, err
		}
		if err := os.Chmod(d, 0o750); err != nil {
			return s, err
		}
		if d == j.base {
			break
		}
	}
	for _, d := range []string{"run", "dev"} {
		if err := os.MkdirAll(j.host("/"+d), 0o750); err != nil {
			return s, err
		}
		os.Chown(j.host("/"+d), j.uid, j.gid)
	}
	in := s
	link := func(src, name string, writable bool) (string, error) {
		if err := os.Link(src, j.host("/"+name)); err != nil {
			if errors.Is(err, syscall.EXDEV) {
				return "", fmt.Errorf("jail: %s is on another filesystem than the VM dir %s: the jailer needs hard links", src, s.Dir)
			}
			return "", fmt.Errorf("jail: link %s: %w", src, err)
		}
		var err error
		if writable {
			err = os.Chown(src, j.uid, j.gid)
			if err == nil {
				err = os.Chmod(src, 0o600)
			}
		} else if fi, serr := os.Stat(src); serr == nil && fi.Sys().(*syscall.Stat_t).Uid == 0 {
			// Root's read-only file: readable by the jail's group.
			if err = os.Chown(src, 0, j.gid); err == nil {
				err = os.Chmod(src, 0o640)
			}
		}
		if err != nil {
			return "", fmt.Errorf("jail: hand %s to %d:%d: %w", src, j.uid, j.gid, err)
		}
		return "/" + name, nil
	}
	var err error
	if in.Vmlinux, err = link(s.Vmlinux, "vmlinux", false); err != nil {
		return s, err
	}
	if s.Initrd != "" {
		if in.Initrd, err = link(s.Initrd, "initrd.img", false); err != nil {
			return s, err
		}
	}
	in.Disks = make([]vmm.Disk, len(s.Disks))
	for i, d := range s.Disks {
		in.Disks[i] = d
		if in.Disks[i].Path, err = link(d.Path, vmm.DiskName(i)+".img", !d.ReadOnly); err != nil {
			return s, err
		}
	}
	// Logger and metrics files: Firecracker opens them without O_CREAT.
	for _, f := range []string{LogFile, MetricsFile} {
		fh, err := os.OpenFile(j.host("/"+f), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			return s, err
		}
		fh.Close()
		if err := os.Chown(j.host("/"+f), j.uid, j.gid); err != nil {
			return s, err
		}
	}
	in.Dir, in.RuntimeDir = "/", "/run"
	for _, p := range []string{j.host(pathsFor(in).api), j.host(pathsFor(in).vsock)} {
		if len(p) > vmm.MaxUnixPath {
			return s, fmt.Errorf("jail: socket path %s is %d bytes, over %d: use a shorter state dir", p, len(p), vmm.MaxUnixPath)
		}
	}
	return in, nil
}

// jailedMention is what a jailed Firecracker's command line carries for
// Adopt to check: the jailer's --id, passed on to Firecracker.
func jailedMention(id string) string { return "--id\x00" + id + "\x00" }
