// Package guestcp copies files and directory trees between the host and a
// guest over SFTP (banger-init's sftp subsystem on the agent channel): the
// engine behind `banger vm cp` and the daemon's first-boot `--copy`.
//
// The host side is read and written by the process that calls it, with
// its own rights: the CLI copies only what its user may read or write.
// File data moves with the sftp client's concurrent reads and writes, so a
// copy's memory is bounded by the request window (MaxConcurrentRequests ×
// 32 KiB per file in flight), not by the file's size.
package guestcp

import (
	"errors"
	"io"
	"os"
	"path"
	"syscall"
	"time"

	"github.com/pkg/sftp"
)

// fsys is one side of a copy: the local filesystem or the guest's over
// SFTP. Paths are slash-separated on both (Linux hosts and guests).
type fsys interface {
	Lstat(p string) (os.FileInfo, error)
	Stat(p string) (os.FileInfo, error)
	ReadDir(p string) ([]os.FileInfo, error)
	ReadLink(p string) (string, error)
	Open(p string) (io.ReadCloser, error)
	// Create opens p for writing (created or truncated).
	Create(p string) (io.WriteCloser, error)
	Mkdir(p string, mode os.FileMode) error
	Symlink(target, p string) error
	Link(oldname, newname string) error
	Remove(p string) error
	Chmod(p string, mode os.FileMode) error
	Chtimes(p string, atime, mtime time.Time) error
	Chown(p string, uid, gid int) error
	// where names the side in errors ("" for the host, "VM:" for the guest).
	where() string
}

// owner is a file's owner and times as far as the side knows them.
type owner struct {
	uid, gid int
	atime    time.Time
	known    bool
}

func ownerOf(fi os.FileInfo) owner {
	switch st := fi.Sys().(type) {
	case *syscall.Stat_t:
		return owner{uid: int(st.Uid), gid: int(st.Gid), atime: time.Unix(st.Atim.Sec, st.Atim.Nsec), known: true}
	case *sftp.FileStat:
		return owner{uid: int(st.UID), gid: int(st.GID), atime: time.Unix(int64(st.Atime), 0), known: true}
	}
	return owner{atime: fi.ModTime()}
}

// localFS is the host, as the calling process sees it.
type localFS struct{}

func (localFS) Lstat(p string) (os.FileInfo, error) { return os.Lstat(p) }
func (localFS) Stat(p string) (os.FileInfo, error)  { return os.Stat(p) }
func (localFS) ReadDir(p string) ([]os.FileInfo, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdir(-1)
}
func (localFS) ReadLink(p string) (string, error)    { return os.Readlink(p) }
func (localFS) Open(p string) (io.ReadCloser, error) { return os.Open(p) }
func (localFS) Create(p string) (io.WriteCloser, error) {
	return os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
}
func (localFS) Mkdir(p string, mode os.FileMode) error { return os.Mkdir(p, mode) }
func (localFS) Symlink(target, p string) error         { return os.Symlink(target, p) }
func (localFS) Link(oldname, newname string) error     { return os.Link(oldname, newname) }
func (localFS) Remove(p string) error                  { return os.Remove(p) }
func (localFS) Chmod(p string, mode os.FileMode) error { return os.Chmod(p, mode) }
func (localFS) Chtimes(p string, a, m time.Time) error { return os.Chtimes(p, a, m) }
func (localFS) Chown(p string, uid, gid int) error     { return os.Lchown(p, uid, gid) }
func (localFS) where() string                          { return "" }

// remoteFS is the guest over an SFTP client.
type remoteFS struct {
	c    *sftp.Client
	name string // the VM, for errors
}

func (r remoteFS) Lstat(p string) (os.FileInfo, error)     { return r.c.Lstat(p) }
func (r remoteFS) Stat(p string) (os.FileInfo, error)      { return r.c.Stat(p) }
func (r remoteFS) ReadDir(p string) ([]os.FileInfo, error) { return r.c.ReadDir(p) }
func (r remoteFS) ReadLink(p string) (string, error)       { return r.c.ReadLink(p) }
func (r remoteFS) Open(p string) (io.ReadCloser, error)    { return r.c.Open(p) }
func (r remoteFS) Create(p string) (io.WriteCloser, error) {
	return r.c.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
}
func (r remoteFS) Mkdir(p string, mode os.FileMode) error {
	if err := r.c.Mkdir(p); err != nil {
		return err
	}
	return r.c.Chmod(p, mode)
}
func (r remoteFS) Symlink(target, p string) error         { return r.c.Symlink(target, p) }
func (r remoteFS) Link(oldname, newname string) error     { return r.c.Link(oldname, newname) }
func (r remoteFS) Remove(p string) error                  { return r.c.Remove(p) }
func (r remoteFS) Chmod(p string, mode os.FileMode) error { return r.c.Chmod(p, mode) }
func (r remoteFS) Chtimes(p string, a, m time.Time) error { return r.c.Chtimes(p, a, m) }
func (r remoteFS) Chown(p string, uid, gid int) error     { return r.c.Chown(p, uid, gid) }
func (r remoteFS) where() string {
	if r.name == "" {
		return "guest:"
	}
	return r.name + ":"
}

// isNotExist reports a missing file on either side (sftp's status errors
// map to os.ErrNotExist through errors.Is).
func isNotExist(err error) bool {
	if errors.Is(err, os.ErrNotExist) {
		return true
	}
	var se *sftp.StatusError
	return errors.As(err, &se) && se.FxCode() == sftp.ErrSSHFxNoSuchFile
}

// sftpMode turns sftp's mode bits (which carry setuid etc. as os.ModeSetuid
// after FileStat conversion) into the os.FileMode for Chmod.
func permBits(m os.FileMode, archive bool) os.FileMode {
	if archive {
		return m & (os.ModePerm | os.ModeSetuid | os.ModeSetgid | os.ModeSticky)
	}
	return m & os.ModePerm
}

func join(dir, name string) string { return path.Join(dir, name) }
