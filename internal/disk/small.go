package disk

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
)

var sizeRE = regexp.MustCompile(`Size: (\d+)`)

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
		return nil, fmt.Errorf("read %s in %s: it is a %s, not a regular file", p, img, typ)
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
		return nil, fmt.Errorf("read %s in %s: %s bytes, at most %d", p, img, m[1], max)
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
