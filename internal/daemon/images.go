package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"banger/api"
	"banger/internal/imagebuild"
	"banger/internal/imagecat"
	"banger/internal/kernelcat"
	"banger/internal/keylock"
	"banger/internal/model"
	"banger/internal/store"
)

// ImageService owns images/, the layer cache and the image catalog.
type ImageService struct {
	d        *Daemon
	dir      string
	cacheDir string
	catalog  *imagecat.Catalog

	// imagePullLock holds one lock per image name: explicit pulls and
	// auto-pulls of a name take it and re-check the store after acquiring,
	// so an image is built once however many creates want it. Different
	// names build in parallel; entries vanish when unused.
	imagePullLock keylock.Map

	// seedLocks holds one lock per image id around work-seed refreshes, so
	// two refreshes of one seed never race (readers need no lock: the seed
	// is replaced by rename).
	seedLocks keylock.Map

	// imageOpsMu covers only publication (rename into images/ + UpsertImage)
	// and removal, so the name check and the rename are one step. Builds
	// never run under it.
	imageOpsMu sync.Mutex
}

func newImageService(d *Daemon) (*ImageService, error) {
	cat, err := imagecat.LoadEmbedded()
	if err != nil {
		return nil, fmt.Errorf("embedded image catalog: %w", err)
	}
	if d.cfg.ImageCatalog != "" {
		extra, err := imagecat.LoadFile(d.cfg.ImageCatalog)
		if err != nil {
			return nil, err
		}
		cat = cat.Merge(extra)
	}
	return &ImageService{d: d, dir: filepath.Join(d.cfg.StateDir, "images"),
		cacheDir: filepath.Join(d.cfg.StateDir, "cache", "oci"), catalog: cat}, nil
}

// reconcile removes build dirs a killed daemon left behind, and rows whose
// directory is gone.
func (s *ImageService) reconcile(ctx context.Context) error {
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return err
	}
	imagebuild.CleanCacheTemp(s.cacheDir)
	entries, _ := os.ReadDir(s.dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".tmp-") {
			os.RemoveAll(filepath.Join(s.dir, e.Name()))
		}
	}
	imgs, err := s.d.store.ListImages(ctx)
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, img := range imgs {
		known[img.ID] = true
		if _, err := os.Stat(filepath.Join(img.Dir, imagebuild.RootfsName)); err != nil {
			s.d.log.Warn("image files missing; dropping row", "image", img.Name, "dir", img.Dir)
			s.d.store.DeleteImage(ctx, img.ID)
		}
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") && !known[e.Name()] {
			// Renamed into place but never recorded (the daemon died between
			// rename and upsert), or its row was lost: kept, not deleted.
			if err := s.d.moveToLostFound("image", filepath.Join(s.dir, e.Name())); err != nil {
				s.d.log.Warn("orphan image directory", "err", err)
			}
		}
	}
	return nil
}

// findImage returns a local image by exact name or id.
func (s *ImageService) findImage(ctx context.Context, name string) (model.Image, error) {
	return s.d.store.GetImage(ctx, name)
}

// findOrAutoPullImage resolves name to a local image: the store first, then
// the catalog, then (for names that look like registry references) an OCI
// pull. The loser of a race for the same name returns the winner's image.
func (s *ImageService) findOrAutoPullImage(ctx context.Context, name string) (model.Image, error) {
	if img, err := s.findImage(ctx, name); err == nil {
		return img, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return img, err
	}
	e, inCatalog := s.catalog.Lookup(name)
	if !inCatalog && !looksLikeRef(name) {
		return model.Image{}, api.Errorf(api.KindNotFound, "image %q not found: pull it with `banger image pull REF`, import it with `banger image import`, or use a catalog image (%s)", name, strings.Join(s.catalog.Names(), ", "))
	}
	unlock, err := s.imagePullLock.Lock(ctx, name)
	if err != nil {
		return model.Image{}, err
	}
	defer unlock()
	if img, err := s.findImage(ctx, name); err == nil {
		return img, nil // a peer pulled it while we waited
	}
	report(ctx, api.Progress{Stage: "auto_pull_image", Message: name})
	if inCatalog {
		return s.pullCatalogLocked(ctx, e)
	}
	return s.pullRefLocked(ctx, name, name, kernelcat.DefaultKernel)
}

// looksLikeRef says whether name is a registry reference (has a registry
// host or a path), as opposed to a plain catalog/local name.
func looksLikeRef(name string) bool {
	return strings.ContainsAny(name, "/") && !strings.HasPrefix(name, "/") && !strings.HasPrefix(name, ".")
}

// PullImage is the explicit `image pull`: ref may be a catalog name or a
// registry reference; an image already there is already_exists.
func (s *ImageService) PullImage(ctx context.Context, ref, name string) (model.Image, error) {
	e, inCatalog := s.catalog.Lookup(ref)
	if name == "" {
		name = ref
	}
	if err := validateImageName(name); err != nil {
		return model.Image{}, err
	}
	if !inCatalog {
		if _, err := imagebuild.ParseRef(ref); err != nil {
			return model.Image{}, api.Errorf(api.KindInvalidArgument, "invalid image reference %q: %w (catalog images: %s)", ref, err, strings.Join(s.catalog.Names(), ", "))
		}
	}
	unlock, err := s.imagePullLock.Lock(ctx, name)
	if err != nil {
		return model.Image{}, err
	}
	defer unlock()
	if img, err := s.findImage(ctx, name); err == nil {
		return img, api.Errorf(api.KindAlreadyExists, "image %q already pulled (id %s): `banger image rm %s` first to pull it again", name, img.ID[:12], name)
	}
	if inCatalog {
		e.Name = name
		return s.pullCatalogLocked(ctx, e)
	}
	return s.pullRefLocked(ctx, ref, name, kernelcat.DefaultKernel)
}

func validateImageName(name string) error {
	if name == "" || len(name) > 255 || strings.ContainsAny(name, " \t\n\x00\"'\\") || strings.Contains(name, "..") {
		return api.Errorf(api.KindInvalidArgument, "invalid image name %q: 1-255 characters, no spaces, quotes or '..'", name)
	}
	return nil
}

func (s *ImageService) buildOptions(ctx context.Context, work string) imagebuild.Options {
	_, pub := s.d.keys.current()
	return imagebuild.Options{WorkDir: work, CacheDir: s.cacheDir, AuthorizedKey: pub,
		Progress: func(stage, msg string, done, total int64) {
			report(ctx, api.Progress{Stage: stage, Message: msg, Done: done, Total: max(total, 0), Unit: imageUnit(stage)})
		}}
}

// imageUnit is the unit of imagebuild's stage counts: layer and download
// count bytes; apply counts layers.
func imageUnit(stage string) string {
	if stage == "layer" || stage == "download" {
		return api.UnitBytes
	}
	return ""
}

func (s *ImageService) tempDir() (string, error) {
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return "", err
	}
	return os.MkdirTemp(s.dir, ".tmp-")
}

// pullRefLocked pulls the OCI image ref and publishes it as name.
//
// caller holds s.imagePullLock[name].
func (s *ImageService) pullRefLocked(ctx context.Context, ref, name, kernel string) (model.Image, error) {
	op := s.d.beginOperation(ctx, "image.pull", "ref", ref, "image", name)
	work, err := s.tempDir()
	if err != nil {
		return model.Image{}, op.fail(err)
	}
	defer os.RemoveAll(work) // no-op after a successful rename
	op.stage("pull_image", ref)
	res, err := imagebuild.Pull(ctx, ref, s.buildOptions(ctx, work))
	if err != nil {
		return model.Image{}, op.fail(fmt.Errorf("pull image %q: %w", ref, err))
	}
	img, err := s.publishImage(ctx, res, model.Image{Name: name, Source: "oci:" + ref, Kernel: kernel})
	if err != nil {
		return img, op.fail(err)
	}
	op.done()
	return img, nil
}

// pullCatalogLocked builds the catalog image e by its source type.
//
// caller holds s.imagePullLock[e.Name].
func (s *ImageService) pullCatalogLocked(ctx context.Context, e imagecat.Entry) (model.Image, error) {
	kernel := e.Kernel
	if kernel == "" {
		kernel = kernelcat.DefaultKernel
	}
	var img model.Image
	var err error
	switch e.Source.Type {
	case "oci":
		img, err = s.pullRefLocked(ctx, e.Source.Ref, e.Name, kernel)
	case "debootstrap":
		img, err = s.buildDebootstrapLocked(ctx, e, kernel)
	case "bundle":
		img, err = s.fetchBundleLocked(ctx, e, kernel)
	default:
		return model.Image{}, api.Errorf(api.KindInvalidArgument, "image %q: source type %q is not supported by this build", e.Name, e.Source.Type)
	}
	if err == nil && e.Init != "" && img.Init != e.Init {
		// The catalog's default init mode goes on the image record.
		img.Init = e.Init
		err = s.d.store.UpsertImage(ctx, img)
	}
	return img, err
}

// fetchBundleLocked downloads the prebuilt image bundle of e.
//
// caller holds s.imagePullLock[e.Name].
func (s *ImageService) fetchBundleLocked(ctx context.Context, e imagecat.Entry, kernel string) (model.Image, error) {
	op := s.d.beginOperation(ctx, "image.pull", "image", e.Name, "bundle", e.Source.URL)
	work, err := s.tempDir()
	if err != nil {
		return model.Image{}, op.fail(err)
	}
	defer os.RemoveAll(work)
	op.stage("pull_bundle", e.Source.URL)
	res, err := imagebuild.FetchBundle(ctx, e.Source.URL, e.Source.SHA256, s.buildOptions(ctx, work))
	if err != nil {
		return model.Image{}, op.fail(api.Errorf(api.KindUnavailable, "pull image %q: %w", e.Name, err))
	}
	img, err := s.publishImage(ctx, res, model.Image{Name: e.Name, Source: "bundle:" + e.Source.URL, Kernel: kernel})
	if err != nil {
		return img, op.fail(err)
	}
	op.done()
	return img, nil
}

// buildDebootstrapLocked builds the Debian image of e with debootstrap.
//
// caller holds s.imagePullLock[e.Name].
func (s *ImageService) buildDebootstrapLocked(ctx context.Context, e imagecat.Entry, kernel string) (model.Image, error) {
	op := s.d.beginOperation(ctx, "image.build", "image", e.Name, "suite", e.Source.Suite)
	work, err := s.tempDir()
	if err != nil {
		return model.Image{}, op.fail(err)
	}
	defer os.RemoveAll(work)
	tree := filepath.Join(work, "tree")
	op.stage("debootstrap", e.Source.Suite)
	mirror := s.d.cfg.AptMirror
	err = imagecat.BuildDebootstrapTree(ctx, e, mirror, tree, func(stage, msg string) {
		report(ctx, api.Progress{Stage: stage, Message: msg})
	})
	if err != nil {
		return model.Image{}, op.fail(api.Errorf(api.KindUnavailable, "build image %q: %w", e.Name, err))
	}
	out := filepath.Join(work, "image")
	cfg := model.ImageConfig{Cmd: []string{"/bin/bash"}, WorkingDir: "/root",
		Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}}
	res, err := imagebuild.BuildFromTree(ctx, tree, cfg, s.buildOptions(ctx, out))
	if err != nil {
		return model.Image{}, op.fail(api.Errorf(api.KindInternal, "build image %q: %w", e.Name, err))
	}
	os.RemoveAll(tree) // free the space before publishing
	img, err := s.publishImage(ctx, res, model.Image{Name: e.Name, Source: "debootstrap:" + e.Source.Suite, Kernel: kernel})
	if err != nil {
		return img, op.fail(err)
	}
	op.done()
	return img, nil
}

// publishImage renames a finished build into images/<id> and records it.
// imageOpsMu covers only the re-check, the rename and the upsert.
func (s *ImageService) publishImage(ctx context.Context, res *imagebuild.Result, img model.Image) (model.Image, error) {
	s.imageOpsMu.Lock()
	defer s.imageOpsMu.Unlock()
	if existing, err := s.findImage(ctx, img.Name); err == nil {
		return existing, nil // published by a path that did not share our pull lock
	}
	img.ID = model.NewID()
	img.Dir = filepath.Join(s.dir, img.ID)
	img.Digest = res.Digest
	img.Config = res.Config
	img.SizeBytes = res.SizeBytes
	img.KeyFingerprint = res.KeyFingerprint
	img.CreatedAt = time.Now().UTC()
	if err := os.Rename(res.Dir, img.Dir); err != nil {
		return model.Image{}, fmt.Errorf("publish image %q: %w", img.Name, err)
	}
	if err := s.d.store.UpsertImage(ctx, img); err != nil {
		os.RemoveAll(img.Dir)
		return model.Image{}, fmt.Errorf("record image %q: %w", img.Name, err)
	}
	action := "pull"
	if strings.HasPrefix(img.Source, "import:") {
		action = "import"
	}
	s.d.objectEvent("image", action, img.ID, img.Name)
	return img, nil
}

// ImportImage builds an image from an OCI layout dir or docker-save tarball.
func (s *ImageService) ImportImage(ctx context.Context, path, name, kernel string) (model.Image, error) {
	if kernel == "" {
		kernel = kernelcat.DefaultKernel
	}
	if name == "" {
		return model.Image{}, api.Errorf(api.KindInvalidArgument, "image import: --name is required")
	}
	if err := validateImageName(name); err != nil {
		return model.Image{}, err
	}
	if !filepath.IsAbs(path) {
		return model.Image{}, api.Errorf(api.KindInvalidArgument, "image import: path %q must be absolute (the daemon resolves it, not your shell)", path)
	}
	unlock, err := s.imagePullLock.Lock(ctx, name)
	if err != nil {
		return model.Image{}, err
	}
	defer unlock()
	if _, err := s.findImage(ctx, name); err == nil {
		return model.Image{}, api.Errorf(api.KindAlreadyExists, "image %q already exists: pick another --name or `banger image rm %s`", name, name)
	}
	// Read with the caller's rights (hostpaths.go).
	staged, cleanup, err := s.d.stagePaths(ctx, path)
	if err != nil {
		return model.Image{}, err
	}
	defer cleanup()
	if _, err := os.Stat(staged[0]); err != nil {
		return model.Image{}, api.Errorf(api.KindInvalidArgument, "image import: %w", err)
	}
	op := s.d.beginOperation(ctx, "image.import", "path", path, "image", name)
	work, err := s.tempDir()
	if err != nil {
		return model.Image{}, op.fail(err)
	}
	defer os.RemoveAll(work)
	res, err := imagebuild.Import(ctx, staged[0], s.buildOptions(ctx, work))
	if err != nil {
		return model.Image{}, op.fail(api.Errorf(api.KindInvalidArgument, "import %s: %w", path, err))
	}
	img, err := s.publishImage(ctx, res, model.Image{Name: name, Source: "import:" + path, Kernel: kernel})
	if err != nil {
		return img, op.fail(err)
	}
	op.done()
	return img, nil
}

// RemoveImage deletes an image no VM uses.
func (s *ImageService) RemoveImage(ctx context.Context, name string) (model.Image, error) {
	img, err := s.findImage(ctx, name)
	if err != nil {
		return img, api.Errorf(api.KindNotFound, "image %q not found: `banger image ls` lists images", name)
	}
	unlock, err := s.imagePullLock.Lock(ctx, img.Name)
	if err != nil {
		return img, err
	}
	defer unlock()
	s.imageOpsMu.Lock()
	defer s.imageOpsMu.Unlock()
	vms, err := s.d.store.VMsUsingImage(ctx, img.ID)
	if err != nil {
		return img, err
	}
	if len(vms) > 0 {
		return img, api.Errorf(api.KindConflict, "image %q is used by VM(s) %s: remove them first", img.Name, vmNames(vms))
	}
	if err := s.d.store.DeleteImage(ctx, img.ID); err != nil {
		return img, err
	}
	// Rename first so no reader ever sees a half-deleted image dir.
	trash := filepath.Join(s.dir, ".tmp-rm-"+img.ID)
	if err := os.Rename(img.Dir, trash); err == nil {
		os.RemoveAll(trash)
	}
	s.d.vms.dropWarm(func(sn model.Snapshot) bool { return sn.Spec.ImageID == img.ID })
	return img, nil
}

// ensureSeedKey makes the image's work seed carry the daemon's current key:
// after `ssh-key rotate` the first create of each image rewrites its seed
// (refreshManagedWorkSeedFingerprint). Returns the up-to-date image.
func (s *ImageService) ensureSeedKey(ctx context.Context, img model.Image) (model.Image, error) {
	if img.KeyFingerprint == s.d.keys.fingerprint() {
		return img, nil
	}
	return s.refreshManagedWorkSeedFingerprint(ctx, img)
}

// refreshManagedWorkSeedFingerprint rewrites the seed on a sibling temp
// file and renames it over the seed (imagebuild.RefreshWorkSeed); only
// then does UpsertImage record the new fingerprint, so the recorded
// fingerprint never names a key the seed does not hold.
func (s *ImageService) refreshManagedWorkSeedFingerprint(ctx context.Context, img model.Image) (model.Image, error) {
	unlock, err := s.seedLocks.Lock(ctx, img.ID)
	if err != nil {
		return img, err
	}
	defer unlock()
	cur, err := s.d.store.GetImage(ctx, img.ID)
	if err != nil {
		return img, err
	}
	_, pub := s.d.keys.current()
	fp := s.d.keys.fingerprint()
	if cur.KeyFingerprint == fp {
		return cur, nil
	}
	got, err := imagebuild.RefreshWorkSeed(ctx, filepath.Join(cur.Dir, imagebuild.WorkSeedName), pub)
	if err != nil {
		return cur, fmt.Errorf("refresh work seed of image %q: %w", cur.Name, err)
	}
	cur.KeyFingerprint = got
	if err := s.d.store.UpsertImage(ctx, cur); err != nil {
		return cur, err
	}
	return cur, nil
}

// Catalog lists the catalog's images and whether each is pulled.
func (s *ImageService) Catalog(ctx context.Context) []api.CatalogEntry {
	out := []api.CatalogEntry{}
	for _, n := range s.catalog.Names() {
		e, _ := s.catalog.Lookup(n)
		src := e.Source.Type + ":" + e.Source.Ref + e.Source.Suite + e.Source.URL
		_, err := s.findImage(ctx, n)
		out = append(out, api.CatalogEntry{Name: n, Description: e.Description, Source: src, Kernel: e.Kernel, Pulled: err == nil, Default: n == s.d.cfg.DefaultImage})
	}
	return out
}
