package guestcp

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/pkg/sftp"
)

// WriteTar writes the guest's srcs (each under its base name, a directory
// with everything below it) to w as a tar stream (`vm cp VM:PATH -`).
// Directories need no -r here: a tar is an archive of trees, as with
// docker cp.
func WriteTar(ctx context.Context, c *sftp.Client, vm string, srcs []string, w io.Writer, opt Options) error {
	items := make([]TarItem, len(srcs))
	for i, s := range srcs {
		items[i] = TarItem{Path: s, Name: path.Base(strings.TrimRight(s, "/"))}
	}
	return writeTar(ctx, remoteFS{c, vm}, items, w, opt)
}

// TarItem is one tree to archive: Path on the source side, stored as Name.
type TarItem struct {
	Path, Name string
}

// WriteLocalTar archives host trees (the CLI's `vm create --copy`: Name is
// the guest path without its leading slash, extracted at /).
func WriteLocalTar(ctx context.Context, items []TarItem, w io.Writer) error {
	return writeTar(ctx, localFS{}, items, w, Options{Recursive: true})
}

func writeTar(ctx context.Context, src fsys, items []TarItem, w io.Writer, opt Options) error {
	opt.Recursive = true
	p := &Plan{src: src, opt: opt}
	for _, it := range items {
		if err := p.walk(it.Path, it.Name, nil); err != nil {
			return err
		}
	}
	tw := tar.NewWriter(w)
	for _, e := range p.entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(e.fi, e.link)
		if err != nil {
			return fmt.Errorf("%s%s: %w", src.where(), e.src, err)
		}
		hdr.Name = strings.TrimPrefix(e.dst, "/")
		if e.fi.IsDir() {
			hdr.Name += "/"
		}
		o := ownerOf(e.fi)
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = o.uid, o.gid, "", ""
		hdr.Format = tar.FormatPAX
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !e.fi.Mode().IsRegular() {
			continue
		}
		in, err := src.Open(e.src)
		if err != nil {
			return fmt.Errorf("%s%s: %w", src.where(), e.src, unwrapPath(err))
		}
		// The header promised Size bytes: a file that changed meanwhile
		// is cut or padded to it rather than breaking the stream.
		var n int64
		if sf, ok := in.(*sftp.File); ok {
			n, err = sf.WriteTo(&countWriter{w: &limitWriter{w: tw, n: e.fi.Size()}, fn: opt.Progress})
			n = min(n, e.fi.Size())
		} else {
			n, err = io.Copy(&countWriter{w: tw, fn: opt.Progress}, io.LimitReader(in, e.fi.Size()))
		}
		in.Close()
		if err != nil {
			return fmt.Errorf("%s%s: %w", src.where(), e.src, err)
		}
		if n < e.fi.Size() {
			if _, err := io.CopyN(tw, zeros{}, e.fi.Size()-n); err != nil {
				return err
			}
		}
	}
	return tw.Close()
}

type zeros struct{}

func (zeros) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}

// limitWriter drops what goes past n bytes.
type limitWriter struct {
	w io.Writer
	n int64
}

func (l *limitWriter) Write(b []byte) (int, error) {
	total := len(b)
	if int64(len(b)) > l.n {
		b = b[:l.n]
	}
	n, err := l.w.Write(b)
	l.n -= int64(n)
	if err != nil {
		return n, err
	}
	return total, nil
}

// ExtractTar extracts the tar stream r into dir in the guest (`vm cp -
// VM:DIR`; the daemon's first-boot copies at /). dir must be an existing
// directory. Entries keep the tar's modes and times (owners only with
// Archive); parents missing from the stream are made 0755. Names that are
// absolute or climb out with ".." are refused; devices and FIFOs are
// skipped, named in the returned skipped list.
func ExtractTar(ctx context.Context, c *sftp.Client, vm string, r io.Reader, dir string, opt Options) (skipped []string, err error) {
	dst := remoteFS{c, vm}
	st, err := dst.Stat(dir)
	if err != nil || !st.IsDir() {
		return nil, fmt.Errorf("%s%s: not a directory (a tar is extracted into an existing directory)", dst.where(), dir)
	}
	tr := tar.NewReader(r)
	type dirAttr struct {
		path string
		hdr  *tar.Header
	}
	var dirs []dirAttr
	made := map[string]bool{}
	mkparents := func(p string) error {
		var missing []string
		for d := path.Dir(p); d != dir && d != "/" && !made[d]; d = path.Dir(d) {
			if _, err := dst.Lstat(d); err == nil {
				break
			}
			missing = append(missing, d)
		}
		for i := len(missing) - 1; i >= 0; i-- {
			if err := dst.Mkdir(missing[i], 0o755); err != nil {
				return fmt.Errorf("%s%s: %w", dst.where(), missing[i], unwrapPath(err))
			}
			made[missing[i]] = true
		}
		return nil
	}
	for {
		if err := ctx.Err(); err != nil {
			return skipped, err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return skipped, fmt.Errorf("read tar: %w", err)
		}
		name, err := cleanTarName(hdr.Name)
		if err != nil {
			return skipped, err
		}
		if name == "" {
			if hdr.Typeflag == tar.TypeDir {
				dirs = append(dirs, dirAttr{dir, hdr})
			}
			continue
		}
		target := join(dir, name)
		if err := mkparents(target); err != nil {
			return skipped, err
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := dst.Mkdir(target, 0o700); err != nil {
				if st, serr := dst.Stat(target); serr != nil || !st.IsDir() {
					return skipped, fmt.Errorf("%s%s: %w", dst.where(), target, unwrapPath(err))
				}
			}
			made[target] = true
			dirs = append(dirs, dirAttr{target, hdr})
		case tar.TypeReg, tar.TypeRegA:
			out, err := dst.Create(target)
			if err != nil {
				return skipped, fmt.Errorf("%s%s: %w", dst.where(), target, unwrapPath(err))
			}
			_, err = copyData(ctx, out, tr, hdr.Size, opt.Progress)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return skipped, fmt.Errorf("%s%s: %w", dst.where(), target, err)
			}
			if err := setTarAttrs(dst, target, hdr, opt.Archive); err != nil {
				return skipped, err
			}
		case tar.TypeSymlink:
			if st, err := dst.Lstat(target); err == nil && !st.IsDir() {
				dst.Remove(target)
			}
			if err := dst.Symlink(hdr.Linkname, target); err != nil {
				return skipped, fmt.Errorf("%s%s: symlink: %w", dst.where(), target, unwrapPath(err))
			}
		case tar.TypeLink:
			old, err := cleanTarName(hdr.Linkname)
			if err != nil {
				return skipped, err
			}
			if st, err := dst.Lstat(target); err == nil && !st.IsDir() {
				dst.Remove(target)
			}
			if err := dst.Link(join(dir, old), target); err != nil {
				return skipped, fmt.Errorf("%s%s: hard link to %s: %w", dst.where(), target, old, unwrapPath(err))
			}
		default:
			skipped = append(skipped, name)
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := setTarAttrs(dst, dirs[i].path, dirs[i].hdr, opt.Archive); err != nil {
			return skipped, err
		}
	}
	return skipped, nil
}

func setTarAttrs(dst fsys, p string, hdr *tar.Header, archive bool) error {
	mode := hdr.FileInfo().Mode()
	if err := dst.Chmod(p, permBits(mode, true)); err != nil {
		return fmt.Errorf("%s%s: chmod: %w", dst.where(), p, unwrapPath(err))
	}
	if archive {
		dst.Chown(p, hdr.Uid, hdr.Gid)
	}
	atime := hdr.AccessTime
	if atime.IsZero() {
		atime = hdr.ModTime
	}
	if err := dst.Chtimes(p, atime, hdr.ModTime); err != nil {
		return fmt.Errorf("%s%s: set times: %w", dst.where(), p, unwrapPath(err))
	}
	return nil
}

// cleanTarName makes a tar entry's name relative and refuses one that
// would land outside the extraction directory.
func cleanTarName(name string) (string, error) {
	if strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("tar entry %q: absolute names are refused", name)
	}
	c := path.Clean(name)
	if c == "." {
		return "", nil
	}
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", fmt.Errorf("tar entry %q: climbs out of the destination", name)
	}
	return c, nil
}
