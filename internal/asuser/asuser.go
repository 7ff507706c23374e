// Package asuser reads host paths with a caller's rights, for a root daemon
// that serves users: `banger kernel import --initrd /etc/shadow` from a
// member of the banger group must fail as `cat /etc/shadow` would.
//
// Each open runs on a locked OS thread whose filesystem identity is the
// caller's (setfsuid/setfsgid and setgroups are per-thread system calls;
// a non-zero fsuid also drops the thread's DAC-override capabilities).
// Only the open is done as the caller: the daemon copies from the open
// descriptor into its own private staging directory as root, so the
// rest of an import never touches the caller's paths again (no
// time-of-check to time-of-use window). Only regular files and
// directories are accepted, never FIFOs, devices, sockets or files of
// /proc and /sys, and every copy is capped.
package asuser

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Creds is a caller's filesystem identity.
type Creds struct {
	UID, GID uint32
	Groups   []uint32
}

// CredsOf returns uid and gid with the supplementary groups of process
// pid (from /proc), provided pid still runs as uid; otherwise only gid.
func CredsOf(uid, gid uint32, pid int32) Creds {
	c := Creds{UID: uid, GID: gid}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil || len(b) > 1<<20 {
		return c
	}
	var groups []uint32
	sameUID := false
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "Uid:":
			// real, effective, saved, fs: all must be the caller's, or the
			// pid was recycled by someone else.
			sameUID = len(f) == 5
			for _, v := range f[1:] {
				if v != strconv.FormatUint(uint64(uid), 10) {
					sameUID = false
				}
			}
		case "Groups:":
			for _, v := range f[1:] {
				if g, err := strconv.ParseUint(v, 10, 32); err == nil && len(groups) < 256 {
					groups = append(groups, uint32(g))
				}
			}
		}
	}
	if sameUID {
		c.Groups = groups
	}
	return c
}

// Limits cap one staged copy.
type Limits struct {
	MaxBytes   int64 // file bytes, all files together
	MaxEntries int   // files and directories
}

// ErrNotAllowed wraps a refusal: the caller may not read the path, or it
// is not a regular file or directory.
var ErrNotAllowed = errors.New("not allowed")

// openAs opens path (relative to dirfd, or absolute with dirfd AT_FDCWD)
// with the caller's rights. flags get O_CLOEXEC|O_NONBLOCK (a FIFO must
// not block the daemon; it is refused after the open anyway).
func openAs(c Creds, dirfd int, path string, flags int) (fd int, err error) {
	fd = -1
	err = asCaller(c, func() error {
		var oerr error
		fd, oerr = unix.Openat(dirfd, path, flags|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		return oerr
	})
	return fd, err
}

// asCaller runs f on a locked OS thread whose filesystem identity
// (fsuid, fsgid, groups) is c's.
func asCaller(c Creds, f func() error) error {
	runtime.LockOSThread()
	// A thread whose identity could not be restored must never run other
	// goroutines: it stays locked, and Go ends it when this goroutine does.
	restored := false
	defer func() {
		if restored {
			runtime.UnlockOSThread()
		}
	}()
	groups := make([]int, len(c.Groups))
	for i, g := range c.Groups {
		groups[i] = int(g)
	}
	if len(groups) == 0 {
		groups = []int{int(c.GID)}
	}
	orig, err := unix.Getgroups()
	if err != nil {
		return err
	}
	// x/sys/unix's Setgroups, Setfsgid and Setfsuid are plain system calls:
	// they change this thread only (unlike package syscall's).
	if err := unix.Setgroups(groups); err != nil {
		return fmt.Errorf("take the caller's groups: %w", err)
	}
	unix.Setfsgid(int(c.GID))
	unix.Setfsuid(int(c.UID))
	err = f()
	unix.Setfsuid(0)
	unix.Setfsgid(0)
	if unix.Setgroups(orig) == nil {
		if cur, _ := unix.SetfsuidRetUid(-1); cur == 0 { // -1: query, no change
			restored = true
		}
	}
	return err
}

// checkKind refuses what is not a regular file or directory, and anything
// on procfs or sysfs.
func checkKind(fd int, path string) (unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return st, err
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err == nil && (sfs.Type == unix.PROC_SUPER_MAGIC || sfs.Type == unix.SYSFS_MAGIC) {
		return st, fmt.Errorf("%s is on /proc or /sys: %w", path, ErrNotAllowed)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFDIR:
		return st, nil
	}
	return st, fmt.Errorf("%s is not a regular file or directory: %w", path, ErrNotAllowed)
}

// Stage copies path (a regular file, or a directory tree of regular files
// and directories; symlinks inside a tree are skipped, never followed)
// into dst, which must not exist, reading everything with c's rights.
// On error dst is removed.
func Stage(c Creds, path string, dst string, lim Limits) (err error) {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("%s: want an absolute path", path)
	}
	fd, err := openAs(c, unix.AT_FDCWD, path, unix.O_RDONLY)
	if err != nil {
		return fmt.Errorf("open %s as uid %d: %w (%w)", path, c.UID, err, ErrNotAllowed)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dst)
		}
	}()
	s := &stager{c: c, lim: lim}
	return s.copy(fd, path, dst)
}

type stager struct {
	c       Creds
	lim     Limits
	bytes   int64
	entries int
}

// copy copies the open fd (closing it) to dst.
func (s *stager) copy(fd int, path, dst string) error {
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	st, err := checkKind(fd, path)
	if err != nil {
		return err
	}
	if s.entries++; s.entries > s.lim.MaxEntries {
		return fmt.Errorf("%s: more than %d entries", path, s.lim.MaxEntries)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFREG {
		return s.copyFile(f, path, dst, st.Size)
	}
	if err := os.Mkdir(dst, 0o700); err != nil {
		return err
	}
	names, err := f.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	for _, n := range names {
		child, err := openAs(s.c, fd, n, unix.O_RDONLY|unix.O_NOFOLLOW)
		if errors.Is(err, unix.ELOOP) {
			continue // a symlink: not followed, not copied
		}
		if err != nil {
			return fmt.Errorf("open %s as uid %d: %w (%w)", filepath.Join(path, n), s.c.UID, err, ErrNotAllowed)
		}
		if err := s.copy(child, filepath.Join(path, n), filepath.Join(dst, n)); err != nil {
			return err
		}
	}
	return nil
}

func (s *stager) copyFile(f *os.File, path, dst string, size int64) error {
	if size > s.lim.MaxBytes-s.bytes {
		return fmt.Errorf("%s: %d bytes is over the %d-byte limit for an import", path, size, s.lim.MaxBytes)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	// A file that grows while we read is cut at the limit.
	n, err := io.Copy(out, io.LimitReader(f, s.lim.MaxBytes-s.bytes+1))
	s.bytes += n
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("copy %s: %w", path, err)
	}
	if s.bytes > s.lim.MaxBytes {
		return fmt.Errorf("%s grew past the %d-byte limit for an import", path, s.lim.MaxBytes)
	}
	return nil
}

// CheckDir opens path as c and returns the directory it names with every
// symlink resolved. It must be a directory (not on /proc or /sys) that c
// may read and search, and write too when write is set: what c could do
// with `ls` and `touch` there.
func CheckDir(c Creds, path string, write bool) (string, error) {
	if !filepath.IsAbs(path) {
		return "", fmt.Errorf("%s: want an absolute path", path)
	}
	fd, err := openAs(c, unix.AT_FDCWD, path, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		if errors.Is(err, unix.ENOTDIR) {
			return "", fmt.Errorf("%s is not a directory: %w", path, ErrNotAllowed)
		}
		if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
			return "", fmt.Errorf("%s: you may not read it: %w", path, ErrNotAllowed)
		}
		return "", fmt.Errorf("%s: %w", path, err)
	}
	defer unix.Close(fd)
	st, err := checkKind(fd, path)
	if err != nil {
		return "", err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return "", fmt.Errorf("%s is not a directory: %w", path, ErrNotAllowed)
	}
	mode := uint32(unix.R_OK | unix.X_OK)
	want := "read and search"
	if write {
		mode |= unix.W_OK
		want = "read, search and write"
	}
	// AT_EACCESS checks with the thread's filesystem identity, which
	// asCaller sets to c's.
	if err := asCaller(c, func() error {
		return unix.Faccessat2(fd, "", mode, unix.AT_EACCESS|unix.AT_EMPTY_PATH)
	}); err != nil {
		return "", fmt.Errorf("%s: you may not %s it (%v): %w", path, want, err, ErrNotAllowed)
	}
	real, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		return "", err
	}
	return real, nil
}
