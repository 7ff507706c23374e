package imagebuild

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"banger/internal/disk"
	"banger/internal/model"
)

// BundleConfigName is the optional image config inside a bundle.
const BundleConfigName = "config.json"

// FetchBundle builds an image from a prebuilt bundle: a tar (optionally
// gzipped) holding rootfs.ext4, work-seed.ext4 and optionally config.json
// (a model.ImageConfig), at an http(s):// or file:// URL. The download is
// checked against sha256 before anything is unpacked (required except for
// file:// and loopback URLs); both disks must pass e2fsck; the daemon's key
// is installed in the seed as for any other image.
func FetchBundle(ctx context.Context, rawURL, sum string, o Options) (res *Result, err error) {
	b, err := newBuild(o)
	if err != nil {
		return nil, err
	}
	defer func() {
		os.RemoveAll(filepath.Join(o.WorkDir, scratch))
		if err != nil {
			for _, n := range []string{RootfsName, WorkSeedName, ManifestName} {
				os.Remove(filepath.Join(o.WorkDir, n))
			}
		}
	}()
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "file") {
		return nil, fmt.Errorf("bundle url %q: want http(s):// or file://", rawURL)
	}
	if sum == "" && u.Scheme != "file" && !isLoopbackURL(u) {
		return nil, fmt.Errorf("bundle %s has no sha256 in the catalog: refusing an unpinned download", rawURL)
	}
	b.progress("download", rawURL, 0, 0)
	tmp := filepath.Join(o.WorkDir, scratch, "bundle")
	got, err := download(ctx, u, tmp, func(done, total int64) { b.progress("download", rawURL, done, total) })
	if err != nil {
		return nil, err
	}
	if sum != "" && !strings.EqualFold(got, sum) {
		return nil, fmt.Errorf("bundle %s: sha256 mismatch: got %s, catalog says %s", rawURL, got, sum)
	}
	b.progress("unpack", rawURL, 0, 0)
	cfg, err := unpackBundle(tmp, o.WorkDir)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", rawURL, err)
	}
	for _, n := range []string{RootfsName, WorkSeedName} {
		if err := disk.Fsck(ctx, filepath.Join(o.WorkDir, n)); err != nil {
			return nil, fmt.Errorf("bundle %s: %s: %w", rawURL, n, err)
		}
	}
	return b.publish(ctx, &Manifest{Source: "bundle", Ref: rawURL, Digest: "sha256:" + got, Config: cfg})
}

func isLoopbackURL(u *url.URL) bool {
	h := u.Hostname()
	ip := net.ParseIP(h)
	return h == "localhost" || ip != nil && ip.IsLoopback()
}

// download copies u to dst and returns the hex sha256 of what it wrote.
func download(ctx context.Context, u *url.URL, dst string, progress func(done, total int64)) (string, error) {
	var r io.ReadCloser
	total := int64(-1)
	if u.Scheme == "file" {
		f, err := os.Open(u.Path)
		if err != nil {
			return "", fmt.Errorf("bundle: %w", err)
		}
		if st, err := f.Stat(); err == nil {
			total = st.Size()
		}
		r = f
	} else {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return "", err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return "", fmt.Errorf("download bundle %s: %w", u, err)
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return "", fmt.Errorf("download bundle %s: HTTP %s (check the catalog entry's url)", u, resp.Status)
		}
		total = resp.ContentLength
		r = resp.Body
	}
	defer r.Close()
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	var done int64
	buf := make([]byte, 1<<20)
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			if _, err := f.Write(buf[:n]); err != nil {
				return "", fmt.Errorf("write bundle: %w", err)
			}
			h.Write(buf[:n])
			done += int64(n)
			progress(done, max(total, 0))
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return "", fmt.Errorf("download bundle %s: %w", u, rerr)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), f.Close()
}

// unpackBundle extracts exactly the known files into dir. Anything else
// (other names, paths, links, devices) is refused: a bundle is data, not a
// tree to trust.
func unpackBundle(path, dir string) (model.ImageConfig, error) {
	var cfg model.ImageConfig
	f, err := os.Open(path)
	if err != nil {
		return cfg, err
	}
	defer f.Close()
	br := bufio.NewReader(f)
	var r io.Reader = br
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		gz, err := gzip.NewReader(br)
		if err != nil {
			return cfg, fmt.Errorf("gzip: %w", err)
		}
		r = gz
	}
	tr := tar.NewReader(r)
	seen := map[string]bool{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return cfg, fmt.Errorf("corrupt tar: %w", err)
		}
		name := strings.TrimPrefix(h.Name, "./")
		if h.Typeflag == tar.TypeDir && (name == "" || name == ".") {
			continue
		}
		if name != RootfsName && name != WorkSeedName && name != BundleConfigName {
			return cfg, fmt.Errorf("unexpected entry %q (a bundle holds only %s, %s and %s)", h.Name, RootfsName, WorkSeedName, BundleConfigName)
		}
		if h.Typeflag != tar.TypeReg || seen[name] {
			return cfg, fmt.Errorf("entry %q: want one regular file", h.Name)
		}
		seen[name] = true
		if name == BundleConfigName {
			if err := json.NewDecoder(io.LimitReader(tr, 1<<20)).Decode(&cfg); err != nil {
				return cfg, fmt.Errorf("%s: %w", BundleConfigName, err)
			}
			continue
		}
		out, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return cfg, err
		}
		if err := copySparse(out, tr); err != nil {
			out.Close()
			return cfg, fmt.Errorf("write %s: %w", name, err)
		}
		if err := out.Close(); err != nil {
			return cfg, err
		}
	}
	if !seen[RootfsName] || !seen[WorkSeedName] {
		return cfg, errors.New("bundle lacks " + RootfsName + " or " + WorkSeedName)
	}
	return cfg, nil
}

// copySparse writes r to f, seeking over all-zero 64 KiB blocks so disk
// images stay sparse.
func copySparse(f *os.File, r io.Reader) error {
	buf := make([]byte, 64<<10)
	var off int64
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			if isZero(buf[:n]) {
				off += int64(n)
			} else {
				if _, werr := f.WriteAt(buf[:n], off); werr != nil {
					return werr
				}
				off += int64(n)
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return err
		}
	}
	return f.Truncate(off)
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
