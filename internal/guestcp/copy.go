package guestcp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"sync"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// Options shape a copy.
type Options struct {
	// Recursive allows directories (scp -r).
	Recursive bool
	// Archive keeps modes with their setuid/setgid/sticky bits, times and
	// owners (tar -p, cp -a); without it files and directories keep their
	// permission bits only. Owners change only where the writing side may
	// (the guest runs as root; the host side only as root).
	Archive bool
	// Progress, when set, is called with the bytes of file data copied
	// since its last call.
	Progress func(delta int64)
	// Planned, when set, is called once a copy between two trees is
	// planned, before any byte moves, with the bytes of file data it will
	// copy (a progress bar's total). banger/client calls it.
	Planned func(total int64)
	// Workers copies this many files at once (default 16): a tree of
	// small files is bound by round trips, not bandwidth.
	Workers int
}

func (o Options) workers() int {
	if o.Workers > 0 {
		return o.Workers
	}
	return 16
}

// NewClient opens an SFTP session on an SSH connection (e.g.
// agent.Client.SSH()), tuned for bulk copies: up to 64 requests of 32 KiB
// in flight per file.
func NewClient(conn *ssh.Client) (*sftp.Client, error) {
	return sftp.NewClient(conn, sftp.UseConcurrentWrites(true), sftp.MaxConcurrentRequestsPerFile(maxInflight))
}

const (
	maxInflight = 64
	packetSize  = 32 << 10
)

// entry is one thing to create at the destination.
type entry struct {
	src, dst string
	fi       os.FileInfo
	link     string // symlink target
}

// Plan is a checked copy: every source exists and has a type we copy, the
// destination is resolved. Nothing has been written yet.
type Plan struct {
	src, dst fsys
	opt      Options
	entries  []entry
	// Bytes is the file data to copy (for a progress bar).
	Bytes int64
}

// PlanUpload checks a host → guest copy of srcs to dst (docker cp / scp
// rules: dst an existing directory receives each source under its base
// name; a single source may be copied to a new name; several sources need
// an existing directory). Host files are opened once each to prove they
// are readable, so an unreadable source fails here, before anything is
// written.
func PlanUpload(c *sftp.Client, vm string, srcs []string, dst string, opt Options) (*Plan, error) {
	return plan(localFS{}, remoteFS{c, vm}, srcs, dst, opt)
}

// PlanDownload is PlanUpload the other way: guest srcs to host dst.
func PlanDownload(c *sftp.Client, vm string, srcs []string, dst string, opt Options) (*Plan, error) {
	return plan(remoteFS{c, vm}, localFS{}, srcs, dst, opt)
}

// PlanLocal checks host sources before any connection is made (the CLI
// calls it first, so a bad source fails fast and without a VM).
func PlanLocal(srcs []string, opt Options) (int64, error) {
	p := &Plan{src: localFS{}, opt: opt}
	for _, s := range srcs {
		if err := p.walk(s, "/", nil); err != nil {
			return 0, err
		}
	}
	return p.Bytes, nil
}

func plan(src, dst fsys, srcs []string, dstPath string, opt Options) (*Plan, error) {
	if len(srcs) == 0 {
		return nil, errors.New("no source")
	}
	if dstPath == "" {
		return nil, fmt.Errorf("%s: empty destination path", dst.where())
	}
	p := &Plan{src: src, dst: dst, opt: opt}
	dstIsDir := false
	st, err := dst.Stat(dstPath)
	switch {
	case err == nil:
		dstIsDir = st.IsDir()
	case !isNotExist(err):
		return nil, fmt.Errorf("%s%s: %w", dst.where(), dstPath, err)
	case strings.HasSuffix(dstPath, "/"):
		return nil, fmt.Errorf("%s%s: no such directory", dst.where(), dstPath)
	default:
		parent := path.Dir(strings.TrimRight(dstPath, "/"))
		if pst, err := dst.Stat(parent); err != nil || !pst.IsDir() {
			return nil, fmt.Errorf("%s%s: no such directory (the parent of %s must exist)", dst.where(), parent, dstPath)
		}
	}
	if len(srcs) > 1 && !dstIsDir {
		return nil, fmt.Errorf("%s%s: not a directory (copying several sources needs an existing directory)", dst.where(), dstPath)
	}
	for _, s := range srcs {
		target := dstPath
		if dstIsDir {
			target = join(dstPath, path.Base(strings.TrimRight(s, "/")))
		}
		if err := p.walk(s, target, nil); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// walk adds srcPath (and, for a directory, everything under it) to the
// plan, to be created at dstPath. fi is srcPath's lstat when the caller
// has it (a directory listing: one round trip per directory, not per
// file), else nil.
func (p *Plan) walk(srcPath, dstPath string, fi os.FileInfo) error {
	var err error
	if fi == nil {
		fi, err = p.src.Lstat(srcPath)
	}
	if err != nil {
		if isNotExist(err) {
			return fmt.Errorf("%s%s: no such file or directory", p.src.where(), srcPath)
		}
		return fmt.Errorf("%s%s: %w", p.src.where(), srcPath, err)
	}
	e := entry{src: srcPath, dst: dstPath, fi: fi}
	switch {
	case fi.Mode().IsRegular():
		if _, local := p.src.(localFS); local {
			// Prove it is readable now, so nothing is written for a copy
			// that would fail halfway.
			f, err := os.Open(srcPath)
			if err != nil {
				return fmt.Errorf("%s: %w", srcPath, unwrapPath(err))
			}
			f.Close()
		}
		p.Bytes += fi.Size()
	case fi.Mode()&os.ModeSymlink != 0:
		if e.link, err = p.src.ReadLink(srcPath); err != nil {
			return fmt.Errorf("%s%s: %w", p.src.where(), srcPath, unwrapPath(err))
		}
	case fi.IsDir():
		if !p.opt.Recursive {
			return fmt.Errorf("%s%s: is a directory (use -r)", p.src.where(), srcPath)
		}
		kids, err := p.src.ReadDir(srcPath)
		if err != nil {
			return fmt.Errorf("%s%s: %w", p.src.where(), srcPath, unwrapPath(err))
		}
		p.entries = append(p.entries, e)
		sort.Slice(kids, func(i, j int) bool { return kids[i].Name() < kids[j].Name() })
		for _, k := range kids {
			if err := p.walk(join(srcPath, k.Name()), join(dstPath, k.Name()), k); err != nil {
				return err
			}
		}
		return nil
	default:
		return fmt.Errorf("%s%s: not a regular file, directory or symlink (%s): not copied", p.src.where(), srcPath, kindOf(fi.Mode()))
	}
	p.entries = append(p.entries, e)
	return nil
}

func kindOf(m os.FileMode) string {
	switch {
	case m&os.ModeNamedPipe != 0:
		return "a named pipe"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeDevice != 0:
		return "a device"
	}
	return m.Type().String()
}

// unwrapPath drops the *PathError wrapper whose path the caller already
// names.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Run carries out the plan: directories first (in tree order, writable
// while filled), then files (Options.Workers at a time) and symlinks, then
// each directory's own mode and times, deepest first (writing into a
// directory changes its mtime, and a read-only mode would stop the
// writes). progress, when not nil, replaces Options.Progress.
func (p *Plan) Run(ctx context.Context, progress func(int64)) error {
	if progress != nil {
		p.opt.Progress = progress
	}
	var dirs, files, links []entry
	for _, e := range p.entries {
		switch {
		case e.fi.IsDir():
			dirs = append(dirs, e)
		case e.fi.Mode()&os.ModeSymlink != 0:
			links = append(links, e)
		default:
			files = append(files, e)
		}
	}
	for _, e := range dirs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := p.dst.Mkdir(e.dst, 0o700); err != nil {
			st, serr := p.dst.Stat(e.dst)
			if serr != nil || !st.IsDir() {
				return fmt.Errorf("%s%s: %w", p.dst.where(), e.dst, unwrapPath(err))
			}
		}
	}
	if err := p.copyFiles(ctx, files); err != nil {
		return err
	}
	for _, e := range links {
		if err := p.dst.Symlink(e.link, e.dst); err != nil {
			// Replace what is there (a file or link; never a directory).
			if st, serr := p.dst.Lstat(e.dst); serr == nil && !st.IsDir() {
				if rerr := p.dst.Remove(e.dst); rerr == nil {
					err = p.dst.Symlink(e.link, e.dst)
				}
			}
			if err != nil {
				return fmt.Errorf("%s%s: symlink: %w", p.dst.where(), e.dst, unwrapPath(err))
			}
		}
		if p.opt.Archive {
			p.chown(e)
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := p.attrs(dirs[i]); err != nil {
			return err
		}
	}
	return nil
}

func (p *Plan) copyFiles(ctx context.Context, files []entry) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	work := make(chan entry)
	var wg sync.WaitGroup
	var once sync.Once
	var firstErr error
	for range min(p.opt.workers(), max(len(files), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range work {
				if err := p.copyFile(ctx, e); err != nil {
					once.Do(func() { firstErr = err; cancel(err) })
				}
			}
		}()
	}
feed:
	for _, e := range files {
		select {
		case work <- e:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return context.Cause(ctx)
}

func (p *Plan) copyFile(ctx context.Context, e entry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	in, err := p.src.Open(e.src)
	if err != nil {
		return fmt.Errorf("%s%s: %w", p.src.where(), e.src, unwrapPath(err))
	}
	defer in.Close()
	out, err := p.dst.Create(e.dst)
	if err != nil {
		return fmt.Errorf("%s%s: %w", p.dst.where(), e.dst, unwrapPath(err))
	}
	_, err = copyData(ctx, out, in, e.fi.Size(), p.opt.Progress)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("copy %s%s to %s%s: %w", p.src.where(), e.src, p.dst.where(), e.dst, err)
	}
	return p.attrs(e)
}

// attrs sets mode (and with Archive times and owner) on a copied file or
// directory.
func (p *Plan) attrs(e entry) error {
	if err := p.dst.Chmod(e.dst, permBits(e.fi.Mode(), p.opt.Archive)); err != nil {
		return fmt.Errorf("%s%s: chmod: %w", p.dst.where(), e.dst, unwrapPath(err))
	}
	if !p.opt.Archive {
		return nil
	}
	p.chown(e)
	o := ownerOf(e.fi)
	if err := p.dst.Chtimes(e.dst, o.atime, e.fi.ModTime()); err != nil {
		return fmt.Errorf("%s%s: set times: %w", p.dst.where(), e.dst, unwrapPath(err))
	}
	return nil
}

// chown keeps the owner where the writer may change it: always in the
// guest (root), on the host only as root. Failures are ignored, as cp -a
// does for a user who may not give files away.
func (p *Plan) chown(e entry) {
	o := ownerOf(e.fi)
	if !o.known {
		return
	}
	if _, local := p.dst.(localFS); local && os.Geteuid() != 0 {
		return
	}
	if e.fi.Mode()&os.ModeSymlink != 0 {
		if _, local := p.dst.(localFS); !local {
			return // sftp's setstat follows links
		}
	}
	p.dst.Chown(e.dst, o.uid, o.gid)
}

// copyData copies in to out using the sftp file's concurrent transfer
// (WriteTo for a guest source, ReadFrom for a guest destination), counting
// bytes for progress.
func copyData(ctx context.Context, out io.Writer, in io.Reader, size int64, progress func(int64)) (int64, error) {
	stop := context.AfterFunc(ctx, func() {
		if c, ok := in.(io.Closer); ok {
			c.Close()
		}
	})
	defer stop()
	if sf, ok := in.(*sftp.File); ok {
		return sf.WriteTo(&countWriter{w: out, fn: progress})
	}
	if sf, ok := out.(*sftp.File); ok {
		// As ReadFrom would for a reader of known size: one request per
		// packet, at most maxInflight at a time.
		return sf.ReadFromWithConcurrency(&countReader{r: in, fn: progress}, int(min(size/packetSize+1, maxInflight)))
	}
	return io.Copy(&countWriter{w: out, fn: progress}, in)
}

type countWriter struct {
	w  io.Writer
	fn func(int64)
}

func (c *countWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	if c.fn != nil && n > 0 {
		c.fn(int64(n))
	}
	return n, err
}

type countReader struct {
	r  io.Reader
	fn func(int64)
}

func (c *countReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	if c.fn != nil && n > 0 {
		c.fn(int64(n))
	}
	return n, err
}
