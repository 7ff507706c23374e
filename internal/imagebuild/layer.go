package imagebuild

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ApplyLayer applies one uncompressed OCI/Docker layer tar stream to the
// tree at root: entries in order (a later duplicate wins), whiteouts
// (".wh.name") and opaque directories (".wh..wh..opq"), with ownership,
// modes, mtimes, symlinks, hard links, device nodes and xattrs.
//
// Every entry stays inside root. Names are taken relative to root (a
// leading "/" is dropped) and one that climbs out with ".." is refused.
// Parent directories are resolved with openat2(RESOLVE_IN_ROOT), so a
// symlink in the tree ("evil -> /etc", "rel -> ../../..") is followed as
// the guest would follow it, inside root, never on the host. The final
// component is created with *at calls relative to that parent and never
// followed. Symlink targets are stored as given: they mean something only
// inside the guest. An entry that cannot be contained is refused with an
// error naming it.
//
// What a layer may expand to is bounded (DefaultLimits): a declared size
// is checked before anything is written, so a tar whose header claims a
// 1 TiB (sparse) file fails at once with an error naming the entry.
func ApplyLayer(root string, r io.Reader) error {
	return applyLayerBudget(root, r, &budget{Limits: Limits{}.withDefaults()})
}

// Limits bound what an image's layers, together, may expand to on the host.
type Limits struct {
	MaxBytes   int64 // file bytes written, holes of sparse files included
	MaxEntries int   // tar entries
}

// DefaultLimits fit any real image with room to spare: the largest images
// in common use are a few tens of GiB and a few hundred thousand files.
var DefaultLimits = Limits{MaxBytes: 64 << 30, MaxEntries: 2_000_000}

func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultLimits.MaxBytes
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultLimits.MaxEntries
	}
	return l
}

// budget is what is left of the Limits across the layers of one build.
type budget struct {
	Limits
	bytes   int64
	entries int
}

var errTooBig = errors.New("the image expands beyond banger's limits (a tar bomb?); refusing it")

// take accounts for one entry of the given declared size.
func (b *budget) take(size int64) error {
	b.entries++
	if b.entries > b.MaxEntries {
		return fmt.Errorf("more than %d entries: %w", b.MaxEntries, errTooBig)
	}
	if size < 0 || size > b.MaxBytes-b.bytes {
		return fmt.Errorf("declares %d bytes, %d already written, limit %d: %w", size, b.bytes, b.MaxBytes, errTooBig)
	}
	b.bytes += size
	return nil
}

func applyLayerBudget(root string, r io.Reader, bud *budget) error {
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("apply layer to %s: %w", root, err)
	}
	a := &applier{root: root, rootFD: fd, seen: map[string]bool{}, ancestors: map[string]bool{}}
	defer unix.Close(fd)
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("apply layer to %s: read tar: %w", root, err)
		}
		if err := bud.take(hdr.Size); err != nil {
			return fmt.Errorf("apply layer to %s: entry %q: %w", root, hdr.Name, err)
		}
		if err := a.apply(hdr, tr); err != nil {
			return fmt.Errorf("apply layer to %s: entry %q: %w", root, hdr.Name, err)
		}
	}
	return a.restoreDirTimes()
}

type applier struct {
	root   string
	rootFD int
	// seen holds the paths this layer created, ancestors their parents:
	// an opaque whiteout hides only what lower layers put there.
	seen      map[string]bool
	ancestors map[string]bool
	// dirTimes are set last: creating entries inside a directory bumps
	// its mtime.
	dirTimes []dirTime
}

type dirTime struct {
	rel          string
	atime, mtime time.Time
}

var errEscape = errors.New("path leads outside the image root; refusing it")

// cleanRel turns an entry name into a clean path relative to root, "." for
// root itself. Absolute names are rooted at root; names climbing above it
// are refused.
func cleanRel(name string) (string, error) {
	c := path.Clean(name)
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", errEscape
	}
	c = strings.TrimLeft(c, "/")
	if c == "" {
		c = "."
	}
	return c, nil
}

func (a *applier) apply(hdr *tar.Header, r io.Reader) error {
	rel, err := cleanRel(hdr.Name)
	if err != nil {
		return err
	}
	dir, base := path.Dir(rel), path.Base(rel)
	if strings.HasPrefix(base, ".wh.") {
		return a.whiteout(dir, strings.TrimPrefix(base, ".wh."))
	}
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader, tar.TypeXHeader, tar.TypeGNULongName, tar.TypeGNULongLink:
		return nil // metadata records that archive/tar already folded in
	}
	if rel == "." {
		if hdr.Typeflag != tar.TypeDir {
			return fmt.Errorf("the image root can only be a directory, not type %q", hdr.Typeflag)
		}
		return a.setDirMeta(a.rootFD, ".", rel, hdr)
	}
	parent, err := a.openDir(dir, true)
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	a.markSeen(rel)

	// Anything already there is replaced, except a directory by a directory.
	var st unix.Stat_t
	if err := unix.Fstatat(parent, base, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil {
		if !(hdr.Typeflag == tar.TypeDir && st.Mode&unix.S_IFMT == unix.S_IFDIR) {
			if err := removeAllAt(parent, base); err != nil {
				return fmt.Errorf("replace existing %s: %w", rel, err)
			}
		}
	} else if !errors.Is(err, unix.ENOENT) {
		return err
	}

	mode := uint32(hdr.Mode & 0o7777)
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := unix.Mkdirat(parent, base, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
			return err
		}
		return a.setDirMeta(parent, base, rel, hdr)
	case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse, tar.TypeCont:
		return a.writeFile(parent, base, hdr, r)
	case tar.TypeSymlink:
		if err := unix.Symlinkat(hdr.Linkname, parent, base); err != nil {
			return err
		}
		return setMeta(parent, base, hdr, -1)
	case tar.TypeLink:
		return a.hardlink(parent, base, hdr)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		kind := map[byte]uint32{tar.TypeChar: unix.S_IFCHR, tar.TypeBlock: unix.S_IFBLK, tar.TypeFifo: unix.S_IFIFO}[hdr.Typeflag]
		dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
		if err := unix.Mknodat(parent, base, kind|mode, int(dev)); err != nil {
			return fmt.Errorf("mknod: %w", err)
		}
		return setMeta(parent, base, hdr, -1)
	default:
		return fmt.Errorf("unsupported tar entry type %q", hdr.Typeflag)
	}
}

func (a *applier) markSeen(rel string) {
	a.seen[rel] = true
	for d := path.Dir(rel); d != "."; d = path.Dir(d) {
		a.ancestors[d] = true
	}
}

// openDir opens rel (relative to root, resolved inside root) as an O_PATH
// directory fd, creating missing directories (mode 0755, root-owned) when
// create is set, as tar extraction does for entries whose parents the
// layer does not list.
func (a *applier) openDir(rel string, create bool) (int, error) {
	fd, err := a.resolve(rel)
	if err == nil || !create || !errors.Is(err, unix.ENOENT) {
		if err != nil {
			err = fmt.Errorf("parent %s: %w", rel, err)
		}
		return fd, err
	}
	cur, err := a.resolve(".")
	if err != nil {
		return -1, err
	}
	prefix := ""
	for _, comp := range strings.Split(rel, "/") {
		prefix = path.Join(prefix, comp)
		next, err := a.resolve(prefix)
		if errors.Is(err, unix.ENOENT) {
			if merr := unix.Mkdirat(cur, comp, 0o755); merr != nil {
				unix.Close(cur)
				if errors.Is(merr, unix.EEXIST) {
					return -1, fmt.Errorf("parent %s exists but is not a directory (a dangling symlink?)", prefix)
				}
				return -1, fmt.Errorf("create parent %s: %w", prefix, merr)
			}
			next, err = a.resolve(prefix)
		}
		unix.Close(cur)
		if err != nil {
			return -1, fmt.Errorf("parent %s: %w", prefix, err)
		}
		cur = next
	}
	return cur, nil
}

// resolve opens rel as a directory with root as "/": ".." and symlinks,
// absolute or relative, cannot leave root.
func (a *applier) resolve(rel string) (int, error) {
	how := &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	}
	for {
		fd, err := unix.Openat2(a.rootFD, rel, how)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue // RESOLVE_IN_ROOT asks for a retry if a rename raced
		}
		return fd, err
	}
}

func (a *applier) whiteout(dir, target string) error {
	if target == ".wh..opq" {
		parent, err := a.openDir(dir, false)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			return nil
		}
		if err != nil {
			return err
		}
		defer unix.Close(parent)
		return a.removeUnseen(parent, dir)
	}
	if target == "" || target == "." || target == ".." || strings.Contains(target, "/") {
		return fmt.Errorf("whiteout names %q: not a file name; refusing it", target)
	}
	if a.seen[path.Join(dir, target)] {
		return nil // whiteouts hide lower layers, not this one
	}
	parent, err := a.openDir(dir, false)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return nil // nothing to hide
	}
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	if err := removeAllAt(parent, target); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("whiteout %s: %w", path.Join(dir, target), err)
	}
	return nil
}

// removeUnseen empties the directory dirFD (rel) of everything lower
// layers put there, keeping what this layer created.
func (a *applier) removeUnseen(dirFD int, rel string) error {
	fd, err := unix.Openat(dirFD, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return err
	}
	for _, name := range names {
		child := path.Join(rel, name)
		if !a.seen[child] && !a.ancestors[child] {
			if err := removeAllAt(fd, name); err != nil {
				return fmt.Errorf("opaque %s: remove %s: %w", rel, child, err)
			}
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			continue
		}
		sub, err := unix.Openat(fd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		err = a.removeUnseen(sub, child)
		unix.Close(sub)
		if err != nil {
			return err
		}
	}
	return nil
}

// removeAllAt removes name in dirFD and, for a directory, everything under
// it, without following any symlink.
func removeAllAt(dirFD int, name string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(dirFD, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return unix.Unlinkat(dirFD, name, 0)
	}
	fd, err := unix.Openat(dirFD, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), name)
	names, err := f.Readdirnames(-1)
	if err == nil {
		for _, n := range names {
			if err = removeAllAt(fd, n); err != nil {
				break
			}
		}
	}
	f.Close()
	if err != nil {
		return err
	}
	return unix.Unlinkat(dirFD, name, unix.AT_REMOVEDIR)
}

func (a *applier) writeFile(parent int, base string, hdr *tar.Header, r io.Reader) error {
	fd, err := unix.Openat(parent, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), base)
	defer f.Close()
	// Zero blocks become holes (copySparse): a sparse entry's declared
	// size costs the host no disk it does not hold in data.
	if err := copySparse(f, r); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return setMeta(parent, base, hdr, fd)
}

func (a *applier) hardlink(parent int, base string, hdr *tar.Header) error {
	target, err := cleanRel(hdr.Linkname)
	if err != nil {
		return fmt.Errorf("hard link to %q: %w", hdr.Linkname, err)
	}
	if target == "." {
		return fmt.Errorf("hard link to the image root; refusing it")
	}
	tparent, err := a.openDir(path.Dir(target), false)
	if err != nil {
		return fmt.Errorf("hard link to %q: %w", hdr.Linkname, err)
	}
	defer unix.Close(tparent)
	// Flags 0: a symlink target is linked itself, never followed.
	if err := unix.Linkat(tparent, path.Base(target), parent, base, 0); err != nil {
		return fmt.Errorf("hard link to %q: %w", hdr.Linkname, err)
	}
	return nil
}

func (a *applier) setDirMeta(parent int, base, rel string, hdr *tar.Header) error {
	fd, err := unix.Openat(parent, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := setMeta(parent, base, hdr, fd); err != nil {
		return err
	}
	a.dirTimes = append(a.dirTimes, dirTime{rel: rel, atime: hdr.AccessTime, mtime: hdr.ModTime})
	return nil
}

// setMeta sets owner, mode, xattrs and times. With fd >= 0 it works on the
// open file; otherwise on base in parent without following it.
func setMeta(parent int, base string, hdr *tar.Header, fd int) error {
	mode := uint32(hdr.Mode & 0o7777)
	if fd >= 0 {
		// chown before chmod: chown clears setuid/setgid bits.
		if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
		if err := unix.Fchmod(fd, mode); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	} else {
		if err := unix.Fchownat(parent, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
		if hdr.Typeflag != tar.TypeSymlink {
			// Only device nodes and fifos land here: we just made them
			// with mknodat, so there is no symlink to follow.
			if err := unix.Fchmodat(parent, base, mode, 0); err != nil {
				return fmt.Errorf("chmod: %w", err)
			}
		}
	}
	if err := setXattrs(parent, base, hdr, fd); err != nil {
		return err
	}
	if hdr.Typeflag == tar.TypeDir {
		return nil // set after the whole layer, see restoreDirTimes
	}
	return setTimes(parent, base, hdr.AccessTime, hdr.ModTime)
}

func setXattrs(parent int, base string, hdr *tar.Header, fd int) error {
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok {
			continue
		}
		var err error
		if fd >= 0 {
			err = unix.Fsetxattr(fd, name, []byte(v), 0)
		} else if hdr.Typeflag != tar.TypeSymlink {
			// The parent fd is already resolved inside root; base is a
			// device node or fifo we just made.
			err = unix.Lsetxattr(fmt.Sprintf("/proc/self/fd/%d/%s", parent, base), name, []byte(v), 0)
		}
		if err != nil && !errors.Is(err, unix.EOPNOTSUPP) {
			return fmt.Errorf("xattr %s: %w", name, err)
		}
	}
	return nil
}

func setTimes(parent int, base string, atime, mtime time.Time) error {
	if mtime.IsZero() {
		return nil
	}
	if atime.IsZero() {
		atime = mtime
	}
	ts := []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	if err := unix.UtimesNanoAt(parent, base, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return nil
}

func (a *applier) restoreDirTimes() error {
	for _, d := range a.dirTimes {
		parent, base := a.rootFD, "."
		if d.rel != "." {
			fd, err := a.openDir(path.Dir(d.rel), false)
			if err != nil {
				continue // removed later in the layer
			}
			parent, base = fd, path.Base(d.rel)
			err = setTimes(parent, base, d.atime, d.mtime)
			unix.Close(fd)
			if err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("apply layer to %s: %s: %w", a.root, d.rel, err)
			}
			continue
		}
		if err := setTimes(parent, base, d.atime, d.mtime); err != nil {
			return fmt.Errorf("apply layer to %s: %w", a.root, err)
		}
	}
	return nil
}
