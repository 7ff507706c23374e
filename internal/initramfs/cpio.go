package initramfs

import (
	"fmt"
	"io"
	"strings"
)

// cpioWriter writes the "newc" (SVR4, no CRC) cpio format the kernel unpacks
// into its initial rootfs. Every field is fixed (mtime 0, uid/gid 0,
// sequential inode numbers) so the same inputs give the same bytes.
type cpioWriter struct {
	w   io.Writer
	ino uint32
	off int64
	err error
}

const (
	cpioModeDir  = 0o040000
	cpioModeReg  = 0o100000
	cpioModeChr  = 0o020000
	cpioModeLink = 0o120000
)

func (c *cpioWriter) header(name string, mode, size, rdevMajor, rdevMinor uint32) {
	if c.err != nil {
		return
	}
	name = strings.TrimPrefix(name, "/")
	c.ino++
	nlink := uint32(1)
	if mode&0o170000 == cpioModeDir {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, size, 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	c.write([]byte(hdr))
	c.write([]byte(name + "\x00"))
	c.pad()
}

func (c *cpioWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(b)
	c.off += int64(n)
	c.err = err
}

// pad aligns to 4 bytes, as newc requires after the name and after the data.
func (c *cpioWriter) pad() {
	if r := c.off % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

func (c *cpioWriter) Dir(name string, perm uint32) {
	c.header(name, cpioModeDir|perm, 0, 0, 0)
}

func (c *cpioWriter) File(name string, perm uint32, data []byte) {
	c.header(name, cpioModeReg|perm, uint32(len(data)), 0, 0)
	c.write(data)
	c.pad()
}

// FileFrom copies size bytes from r, so a large binary is never held twice.
func (c *cpioWriter) FileFrom(name string, perm uint32, size int64, r io.Reader) {
	if size > 1<<32-1 {
		c.err = fmt.Errorf("%s: %d bytes is too large for cpio newc", name, size)
		return
	}
	c.header(name, cpioModeReg|perm, uint32(size), 0, 0)
	if c.err != nil {
		return
	}
	n, err := io.CopyN(c.w, r, size)
	c.off += n
	if err != nil {
		c.err = fmt.Errorf("copy %s into initramfs: %w", name, err)
		return
	}
	c.pad()
}

func (c *cpioWriter) CharDev(name string, perm, major, minor uint32) {
	c.header(name, cpioModeChr|perm, 0, major, minor)
}

func (c *cpioWriter) Symlink(name, target string) {
	c.header(name, cpioModeLink|0o777, uint32(len(target)), 0, 0)
	c.write([]byte(target))
	c.pad()
}

// Close writes the trailer entry; it does not close the underlying writer.
func (c *cpioWriter) Close() error {
	c.header("TRAILER!!!", 0, 0, 0, 0)
	return c.err
}
