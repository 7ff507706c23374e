package disk

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
)

var sizeRE = regexp.MustCompile(`Size: (\d+)`)

// ErrTooLarge and ErrNotRegular mark ReadSmallFileFromExt4's refusals, so
// a caller can set such a file aside instead of failing.
var (
	ErrTooLarge   = errors.New("file too large")
	ErrNotRegular = errors.New("not a regular file")
)

// ReadSmallFileFromExt4 is ReadFileFromExt4 for a file a guest wrote: it
// refuses anything but a regular file of at most max bytes before reading
// it, so a hostile guest cannot make the host buffer a huge file.
func ReadSmallFileFromExt4(ctx context.Context, img, p string, max int64) ([]byte, error) {
	if err := checkImagePath(p); err != nil {
		return nil, err
	}
	typ, err := statType(ctx, img, p)
	if err != nil {
		return nil, err
	}
	if typ != "regular" {
		return nil, fmt.Errorf("read %s in %s: it is a %s: %w", p, img, typ, ErrNotRegular)
	}
	out, err := debugfs(ctx, img, false, "-R", "stat "+quote(p))
	if err != nil {
		return nil, fmt.Errorf("stat %s in %s: %w", p, img, err)
	}
	m := sizeRE.FindSubmatch(out)
	if m == nil {
		return nil, fmt.Errorf("stat %s in %s: no size in debugfs output", p, img)
	}
	n, err := strconv.ParseInt(string(m[1]), 10, 64)
	if err != nil || n > max {
		return nil, fmt.Errorf("read %s in %s: %s bytes, at most %d: %w", p, img, m[1], max, ErrTooLarge)
	}
	b, err := debugfs(ctx, img, false, "-R", "cat "+quote(p))
	if err != nil {
		return nil, fmt.Errorf("read %s in %s: %w", p, img, err)
	}
	if int64(len(b)) > max {
		b = b[:max]
	}
	return b, nil
}

// SetAsideInExt4 renames p inside img to p+suffix without reading it
// (debugfs ln + unlink: the inode and its link count stay as they were).
// An existing p+suffix is replaced.
func SetAsideInExt4(ctx context.Context, img, p, suffix string) error {
	if err := checkImagePath(p); err != nil {
		return err
	}
	dst := p + suffix
	if err := checkImagePath(dst); err != nil {
		return err
	}
	cmds := []string{"ln " + quote(p) + " " + quote(dst), "unlink " + quote(p)}
	if _, err := statType(ctx, img, dst); err == nil {
		cmds = append([]string{"rm " + quote(dst)}, cmds...)
	}
	if _, err := debugfsScript(ctx, img, cmds); err != nil {
		return fmt.Errorf("set %s aside in %s: %w", p, img, err)
	}
	return nil
}
