package imagebuild

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/sync/errgroup"

	"banger/internal/model"
)

// downloadJobs is how many layers download at once while earlier ones are
// applied.
const downloadJobs = 3

// Pull fetches ref (linux/amd64 from a multi-arch index, or o.Platform)
// and builds it in o.WorkDir. Credentials come from the default keychain
// (~/.docker/config.json); registries on loopback are spoken to over plain
// http. Layer blobs are cached in o.CacheDir by digest, so a re-pull of an
// image sharing layers downloads only the missing ones. Layers download in
// parallel and are applied in order as they arrive.
func Pull(ctx context.Context, ref string, o Options) (*Result, error) {
	b, err := newBuild(o)
	if err != nil {
		return nil, err
	}
	res, err := b.pull(ctx, ref)
	if err != nil {
		b.cleanup()
		return nil, fmt.Errorf("pull %s: %w", ref, err)
	}
	return res, nil
}

func (b *build) pull(ctx context.Context, ref string) (*Result, error) {
	r, err := ParseRef(ref)
	if err != nil {
		return nil, err
	}
	plat, err := v1.ParsePlatform(b.o.Platform)
	if err != nil {
		return nil, fmt.Errorf("platform %q: %w", b.o.Platform, err)
	}
	b.progress("resolve", r.String(), 0, 0)
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(authn.DefaultKeychain),
		remote.WithPlatform(*plat),
	}
	desc, err := remote.Get(r, opts...)
	if err != nil {
		return nil, fmt.Errorf("fetch manifest: %w", err)
	}
	m := &Manifest{Source: "oci", Ref: r.String(), Platform: plat.String()}
	if desc.MediaType.IsIndex() {
		m.IndexDigest = desc.Digest.String()
	}
	img, err := desc.Image()
	if err != nil {
		return nil, fmt.Errorf("resolve %s image: %w", plat, err)
	}
	if err := b.describe(img, plat, m); err != nil {
		return nil, err
	}
	if b.o.CacheDir != "" {
		// Built from this exact digest before: reuse the disks, skip the
		// layers.
		cache := blobCache{dir: b.o.CacheDir}
		if cache.loadBuilt(ctx, m.Digest, filepath.Join(b.o.WorkDir, RootfsName), filepath.Join(b.o.WorkDir, WorkSeedName)) {
			b.progress("cached", m.Digest, 0, 0)
			return b.publish(ctx, m)
		}
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	tree, err := b.freshTree()
	if err != nil {
		return nil, err
	}
	if err := b.fetchAndApply(ctx, tree, layers); err != nil {
		return nil, err
	}
	seed, err := b.splitRoot(tree)
	if err != nil {
		return nil, err
	}
	return b.finish(ctx, tree, seed, m)
}

// ParseRef parses an image reference; registries on loopback (localhost,
// 127.0.0.0/8, ::1) are marked insecure so they are spoken to over http.
func ParseRef(ref string) (name.Reference, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("image reference %q: %w", ref, err)
	}
	host := r.Context().RegistryStr()
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	ip := net.ParseIP(host)
	if host == "localhost" || ip != nil && ip.IsLoopback() {
		return name.ParseReference(ref, name.Insecure)
	}
	return r, nil
}

// describe fills the manifest from the image's digest and config, and
// refuses an image for another platform.
func (b *build) describe(img v1.Image, plat *v1.Platform, m *Manifest) error {
	d, err := img.Digest()
	if err != nil {
		return err
	}
	m.Digest = d.String()
	cf, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("image config: %w", err)
	}
	if cf.OS != "" && cf.Architecture != "" && (cf.OS != plat.OS || cf.Architecture != plat.Architecture) {
		return fmt.Errorf("image is %s/%s, not %s: pick a %s image", cf.OS, cf.Architecture, plat, plat)
	}
	m.Config = model.ImageConfig{
		Env:        cf.Config.Env,
		Entrypoint: cf.Config.Entrypoint,
		Cmd:        cf.Config.Cmd,
		WorkingDir: cf.Config.WorkingDir,
		User:       cf.Config.User,
	}
	ls, err := img.Manifest()
	if err != nil {
		return err
	}
	for _, l := range ls.Layers {
		m.Layers = append(m.Layers, l.Digest.String())
	}
	return nil
}

// fetchAndApply downloads layers (downloadJobs at a time, through the
// cache) and applies each, in order, as soon as it and all before it are
// on disk.
func (b *build) fetchAndApply(ctx context.Context, tree string, layers []v1.Layer) error {
	var cache blobCache
	if b.o.CacheDir != "" {
		cache = blobCache{dir: b.o.CacheDir}
		cache.cleanStale(24 * time.Hour)
	} else {
		cache = blobCache{dir: filepath.Join(b.o.WorkDir, scratch, "blobs")}
	}
	type fetched struct {
		path string
		err  error
	}
	ready := make([]chan fetched, len(layers))
	for i := range ready {
		ready[i] = make(chan fetched, 1)
	}
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(dctx)
	g.SetLimit(downloadJobs)
	launched := make(chan struct{})
	go func() {
		defer close(launched)
		for i, l := range layers {
			g.Go(func() error {
				p, err := b.fetchLayer(gctx, cache, l)
				ready[i] <- fetched{p, err}
				return err
			})
		}
	}()
	var applyErr error
	for i, l := range layers {
		var f fetched
		select {
		case f = <-ready[i]:
		case <-ctx.Done():
			f.err = ctx.Err()
		}
		if f.err == nil {
			f.err = ctx.Err()
		}
		if f.err != nil {
			applyErr = f.err
			break
		}
		d, _ := l.Digest()
		b.progress("apply", short(d), int64(i+1), int64(len(layers)))
		if err := applyBlob(tree, f.path, b.budget); err != nil {
			applyErr = fmt.Errorf("layer %d (%s): %w", i+1, d, err)
			break
		}
	}
	if applyErr != nil {
		cancel() // stop the downloads still queued or running
	}
	// Wait for every download so none writes after we return; ready
	// channels are buffered, so no sender blocks on us.
	<-launched
	werr := g.Wait()
	if applyErr != nil {
		return applyErr
	}
	return werr
}

func (b *build) fetchLayer(ctx context.Context, cache blobCache, l v1.Layer) (string, error) {
	d, err := l.Digest()
	if err != nil {
		return "", err
	}
	size, _ := l.Size()
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if p, ok, err := cache.lookup(d); err != nil {
		return "", err
	} else if ok {
		b.progress("layer", short(d)+" cached", size, size)
		return p, nil
	}
	rc, err := l.Compressed()
	if err != nil {
		return "", fmt.Errorf("fetch layer %s: %w", d, err)
	}
	defer rc.Close()
	pr := &progressReader{r: rc, ctx: ctx, total: size, report: func(n int64) {
		b.progress("layer", short(d), n, size)
	}}
	p, err := cache.store(d, pr)
	if err != nil {
		return "", fmt.Errorf("fetch layer %s: %w", d, err)
	}
	b.progress("layer", short(d), size, size)
	return p, nil
}

func applyBlob(tree, blob string, bud *budget) error {
	f, err := os.Open(blob)
	if err != nil {
		return err
	}
	defer f.Close()
	r, err := decompress(f)
	if err != nil {
		return err
	}
	defer r.Close()
	return applyLayerBudget(tree, r, bud)
}

func short(d v1.Hash) string {
	if len(d.Hex) > 12 {
		return d.Hex[:12]
	}
	return d.Hex
}

// progressReader reports bytes read about every MiB and stops on cancel.
type progressReader struct {
	r       io.Reader
	ctx     context.Context
	n, last int64
	total   int64
	report  func(int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	if err := p.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := p.r.Read(b)
	p.n += int64(n)
	if p.n-p.last >= 1<<20 {
		p.last = p.n
		p.report(p.n)
	}
	return n, err
}

// Import builds an image from an OCI image layout directory or a
// `docker save` tarball at path.
func Import(ctx context.Context, path string, o Options) (*Result, error) {
	b, err := newBuild(o)
	if err != nil {
		return nil, err
	}
	res, err := b.importPath(ctx, path)
	if err != nil {
		b.cleanup()
		return nil, fmt.Errorf("import %s: %w", path, err)
	}
	return res, nil
}

func (b *build) importPath(ctx context.Context, path string) (*Result, error) {
	plat, err := v1.ParsePlatform(b.o.Platform)
	if err != nil {
		return nil, fmt.Errorf("platform %q: %w", b.o.Platform, err)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	m := &Manifest{Source: "import", Ref: path, Platform: plat.String()}
	var img v1.Image
	if st.IsDir() {
		idx, err := layout.ImageIndexFromPath(path)
		if err != nil {
			return nil, fmt.Errorf("%s is not an OCI image layout directory (no readable index.json/oci-layout): %w", path, err)
		}
		if d, err := idx.Digest(); err == nil {
			m.IndexDigest = d.String()
		}
		if img, err = imageFromIndex(idx, plat); err != nil {
			return nil, fmt.Errorf("OCI layout %s: %w", path, err)
		}
	} else {
		img, err = tarball.ImageFromPath(path, nil)
		if err != nil {
			return nil, fmt.Errorf("%s is neither an OCI image layout directory nor a docker save tarball: %w", path, err)
		}
	}
	if err := b.describe(img, plat, m); err != nil {
		return nil, err
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	tree, err := b.freshTree()
	if err != nil {
		return nil, err
	}
	for i, l := range layers {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		b.progress("apply", fmt.Sprintf("layer %d", i+1), int64(i+1), int64(len(layers)))
		if err := applyLayer(tree, l, b.budget); err != nil {
			return nil, fmt.Errorf("layer %d: %w", i+1, err)
		}
	}
	seed, err := b.splitRoot(tree)
	if err != nil {
		return nil, err
	}
	return b.finish(ctx, tree, seed, m)
}

func applyLayer(tree string, l v1.Layer, bud *budget) error {
	rc, err := l.Uncompressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	if err := applyLayerBudget(tree, rc, bud); err != nil {
		return err
	}
	// Read to the end so a digest-verifying reader gets to check.
	_, err = io.Copy(io.Discard, rc)
	return err
}

// imageFromIndex picks the image for plat from an index (nested indexes
// included); an index holding a single image without a platform gives it.
func imageFromIndex(idx v1.ImageIndex, plat *v1.Platform) (v1.Image, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	var only []v1.Descriptor
	for _, d := range im.Manifests {
		switch {
		case d.MediaType.IsIndex():
			child, err := idx.ImageIndex(d.Digest)
			if err != nil {
				return nil, err
			}
			if img, err := imageFromIndex(child, plat); err == nil {
				return img, nil
			}
		case d.MediaType.IsImage():
			if d.Platform != nil && d.Platform.Satisfies(*plat) {
				return idx.Image(d.Digest)
			}
			if d.Platform == nil {
				only = append(only, d)
			}
		}
	}
	if len(only) == 1 {
		return idx.Image(only[0].Digest)
	}
	if len(only) > 1 {
		return nil, fmt.Errorf("%d images without a platform; cannot tell which to use", len(only))
	}
	return nil, errors.New("no image for " + plat.String())
}
