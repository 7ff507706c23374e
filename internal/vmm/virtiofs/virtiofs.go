// Package virtiofs runs virtiofsd, the host side of a virtio-fs share, for
// a VMM driver: one process per shared directory, serving it only with the
// VM owner's rights.
//
// Trust: the guest is untrusted and speaks FUSE to virtiofsd, so virtiofsd
// is what keeps it inside the shared directory. It runs
//
//   - with its own sandbox (-o sandbox=namespace: mount, pid and network
//     namespaces, pivot_root into the shared directory, seccomp), so a
//     symlink in the share resolves inside the share, never on the host;
//   - for a non-root owner, inside a user namespace that maps the owner's
//     uid to 0 and the owner's groups to themselves, and nothing else: the
//     process has no more rights on the host than the owner has (root in
//     the guest writes files the owner owns; other guest users cannot
//     create files);
//   - for a read-only share, on a read-only bind mount of the directory
//     made in its own mount namespace before virtiofsd starts, so a guest
//     that remounts its side read-write still cannot write.
//
// The daemon creates the vhost-user socket and passes it as fd 3
// (--fd=3): virtiofsd never creates files outside the share.
package virtiofs

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"banger/internal/vmm"
)

// Candidates are where virtiofsd is looked for after PATH: Debian's
// qemu-system-common (7.2) ships the C one in /usr/lib/qemu; Fedora and the
// Rust virtiofsd package use /usr/libexec.
var Candidates = []string{"/usr/lib/qemu/virtiofsd", "/usr/libexec/virtiofsd"}

// Find returns the virtiofsd to run: one on PATH first, else a Candidate.
func Find() (string, error) {
	if p, err := exec.LookPath("virtiofsd"); err == nil {
		return p, nil
	}
	for _, p := range Candidates {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("no virtiofsd on PATH or in %v: install qemu-system-common (Debian) or virtiofsd", Candidates)
}

// helperArgv0 marks a re-exec of this binary as the mount helper (init).
const helperArgv0 = "banger-virtiofsd-helper"

func init() {
	if len(os.Args) > 0 && os.Args[0] == helperArgv0 {
		err := helperMain(os.Args[1:])
		fmt.Fprintf(os.Stderr, "%s: %v\n", helperArgv0, err)
		os.Exit(127)
	}
}

// helperMain runs in the new mount (and user) namespace Go's clone made:
// args are RO SOURCE VIRTIOFSD ARGS.... It makes the namespace's mounts
// private, binds SOURCE read-only onto itself when RO is "ro", then execs
// virtiofsd. It returns only on failure.
func helperMain(args []string) error {
	if len(args) < 3 {
		return errors.New("usage: ro|rw SOURCE VIRTIOFSD [ARGS...]")
	}
	ro, src, bin := args[0] == "ro", args[1], args[2]
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if ro {
		if err := unix.Mount(src, src, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s: %w", src, err)
		}
		// A remount inside a user namespace must keep the flags the
		// parent mount has (they are locked): carry them over.
		var st unix.Statfs_t
		if err := unix.Statfs(src, &st); err != nil {
			return err
		}
		flags := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_RDONLY)
		for _, f := range [][2]uintptr{{unix.ST_NOSUID, unix.MS_NOSUID}, {unix.ST_NODEV, unix.MS_NODEV}, {unix.ST_NOEXEC, unix.MS_NOEXEC},
			{unix.ST_NOATIME, unix.MS_NOATIME}, {unix.ST_NODIRATIME, unix.MS_NODIRATIME}, {unix.ST_RELATIME, unix.MS_RELATIME}} {
			if uintptr(st.Flags)&f[0] != 0 {
				flags |= f[1]
			}
		}
		if err := unix.Mount("", src, "", flags, ""); err != nil {
			return fmt.Errorf("make %s read-only: %w", src, err)
		}
	}
	return syscall.Exec(bin, args[2:], os.Environ())
}

// Start runs virtiofsd for sh on a listening socket at sock (created
// here, mode 0600: only the root VMM connects), its output appended to
// log. The process outlives the caller (its own session, as a VMM) and
// exits by itself once the VMM that connected is gone.
func Start(bin string, sh vmm.Share, sock, log string) (*vmm.Process, error) {
	if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	old := syscall.Umask(0o177)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("share %s socket: %w", sh.Tag, err)
	}
	// The socket file stays for QEMU to connect to; the daemon's listener
	// closes once virtiofsd has its own copy.
	l.SetUnlinkOnClose(false)
	defer l.Close()
	lf, err := l.File()
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	// This very binary, re-executed as the helper (init): /proc/self/exe
	// works even when the file was replaced since the daemon started.
	const self = "/proc/self/exe"
	mode := "rw"
	if sh.ReadOnly {
		mode = "ro"
	}
	args := []string{mode, sh.HostPath, bin,
		"--fd=3", "-o", "source=" + sh.HostPath, "-o", "sandbox=namespace", "-o", "cache=auto",
		// The daemon's limit is enough; raising it needs privilege a
		// user namespace lacks.
		"--rlimit-nofile=0",
		"-o", "log_level=warn",
	}
	attr := &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS}
	if sh.UID != 0 {
		attr.Cloneflags |= syscall.CLONE_NEWUSER
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(sh.UID), Size: 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(sh.GID), Size: 1}}
		attr.GidMappingsEnableSetgroups = true
		var groups []uint32
		for _, g := range sh.Groups {
			if g == sh.GID || g == 0 {
				continue // 0 inside is the owner's own gid
			}
			attr.GidMappings = append(attr.GidMappings, syscall.SysProcIDMap{ContainerID: int(g), HostID: int(g), Size: 1})
			groups = append(groups, g)
		}
		attr.Credential = &syscall.Credential{Uid: 0, Gid: 0, Groups: groups}
	}
	p, err := vmm.Spawn(vmm.SpawnConfig{Path: self, Argv0: helperArgv0, Args: args, Stdout: log, ExtraFiles: []*os.File{lf}, Attr: attr})
	if err != nil {
		return nil, fmt.Errorf("start virtiofsd for %s: %w: %s", sh.HostPath, err, vmm.Tail(log, 5))
	}
	return p, nil
}

// Mention is what a virtiofsd's command line for sh contains (Attach).
func Mention(sh vmm.Share) string { return "source=" + sh.HostPath }

// SocketPath is share i's vhost-user socket in the VM's runtime dir.
func SocketPath(runtimeDir string, i int) string {
	return filepath.Join(runtimeDir, "fs"+strconv.Itoa(i)+".sock")
}
