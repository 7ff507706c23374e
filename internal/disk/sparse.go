package disk

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// CreateSparse creates (or truncates) path as a sparse file of size bytes.
func CreateSparse(path string, size int64) error {
	if size < 0 {
		return fmt.Errorf("create %s: negative size %d", path, size)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return fmt.Errorf("create %s: %w", path, err)
	}
	return f.Close()
}

// CopySparse copies src to dst (created or truncated), keeping src's holes
// as holes, and fsyncs dst. src is opened once, so a concurrent rename over
// src cannot mix two versions into dst: dst is a copy of exactly one inode.
func CopySparse(src, dst string) error { return copySparse(src, dst, true) }

// CloneSparse is CopySparse without the fsync, for copies that must be
// quick (a paused VM's disks) and are synced later (SyncFile): a reflink
// (FICLONE) where the filesystem has them, else a sparse copy.
func CloneSparse(src, dst string) error { return copySparse(src, dst, false) }

func copySparse(src, dst string, sync bool) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	out, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	// A reflink shares the extents: instant, and still a copy.
	if err = unix.IoctlFileClone(int(out.Fd()), int(in.Fd())); err != nil {
		err = copyData(in, out, st.Size())
	}
	if err == nil {
		err = out.Truncate(st.Size())
	}
	if err == nil && sync {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	return nil
}

// copyData copies the data regions of in (found with SEEK_DATA/SEEK_HOLE)
// to the same offsets of out. Where the filesystem cannot report holes it
// falls back to copying everything but all-zero chunks.
func copyData(in, out *os.File, size int64) error {
	fd := int(in.Fd())
	var off int64
	for off < size {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return nil // only a hole remains
		}
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
			return copySkippingZeros(in, out, off, size)
		}
		if err != nil {
			return err
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		if err := copyRange(in, out, data, hole-data); err != nil {
			return err
		}
		off = hole
	}
	return nil
}

// copyRange copies n bytes at off, in kernel with copy_file_range where it
// can (a reflink on filesystems that have them), else through a buffer.
func copyRange(in, out *os.File, off, n int64) error {
	roff, woff := off, off
	for n > 0 {
		c, err := unix.CopyFileRange(int(in.Fd()), &roff, int(out.Fd()), &woff, int(min(n, 1<<30)), 0)
		if err != nil || c == 0 {
			break
		}
		n -= int64(c)
	}
	if n == 0 {
		return nil
	}
	_, err := io.Copy(io.NewOffsetWriter(out, woff), io.NewSectionReader(in, roff, n))
	return err
}

func copySkippingZeros(in, out *os.File, off, size int64) error {
	buf := make([]byte, 64<<10)
	zero := make([]byte, len(buf))
	for off < size {
		n, err := in.ReadAt(buf[:min(int64(len(buf)), size-off)], off)
		if n > 0 && !bytes.Equal(buf[:n], zero[:n]) {
			if _, werr := out.WriteAt(buf[:n], off); werr != nil {
				return werr
			}
		}
		off += int64(n)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// WriteFileAtomic writes data to path so that readers see either the old
// file or the whole new one: a sibling temp file is written, fsynced and
// renamed over path, then the directory is fsynced.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp := TempSibling(path, "tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm) // not subject to the umask, unlike OpenFile
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return SyncDir(filepath.Dir(path))
}

// TempSibling returns a fresh temp name next to path,
// "<path>.<tag>.<pid>-<unixnano>.tmp", so a rename onto path stays on one
// filesystem and leftovers are easy to recognise and clean.
func TempSibling(path, tag string) string {
	return path + "." + tag + "." + strconv.Itoa(os.Getpid()) + "-" +
		strconv.FormatInt(uniqueNano(), 10) + ".tmp"
}

var lastNano atomic.Int64

// uniqueNano is time.Now().UnixNano(), bumped where needed so that two
// calls in one process never return the same value.
func uniqueNano() int64 {
	for {
		now, last := time.Now().UnixNano(), lastNano.Load()
		if now <= last {
			now = last + 1
		}
		if lastNano.CompareAndSwap(last, now) {
			return now
		}
	}
}

// SyncDir fsyncs a directory so a rename in it survives a crash.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// SyncFile fsyncs a file by path.
func SyncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return nil
}
