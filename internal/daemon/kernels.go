package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"

	"banger/api"
	"banger/internal/kernelcat"
	"banger/internal/keylock"
	"banger/internal/model"
)

// KernelService owns kernels/ and the kernel catalog.
type KernelService struct {
	d       *Daemon
	dir     string
	catalog *kernelcat.Catalog

	// kernelPullLock holds one lock per kernel name: an explicit pull and
	// every auto-pull of that name take it and re-check ReadLocal after
	// acquiring, so a kernel is fetched once however many creates want it.
	// Different names pull in parallel; entries vanish when unused.
	kernelPullLock keylock.Map
}

func newKernelService(d *Daemon) (*KernelService, error) {
	cat, err := kernelcat.LoadEmbedded()
	if err != nil {
		return nil, fmt.Errorf("embedded kernel catalog: %w", err)
	}
	if d.cfg.KernelCatalog != "" {
		extra, err := kernelcat.LoadFile(d.cfg.KernelCatalog)
		if err != nil {
			return nil, err
		}
		cat = cat.Merge(extra)
	}
	s := &KernelService{d: d, dir: filepath.Join(d.cfg.StateDir, "kernels"), catalog: cat}
	return s, nil
}

// reconcile removes temp dirs a killed pull left and syncs the store's
// kernel rows with what is on disk (the manifests are the truth).
func (s *KernelService) reconcile(ctx context.Context) error {
	if err := kernelcat.CleanupTemp(s.dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	ms, err := kernelcat.List(s.dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.d.log.Warn("kernel list", "err", err)
	}
	onDisk := map[string]bool{}
	for _, m := range ms {
		onDisk[m.Name] = true
		if err := s.d.store.UpsertKernel(ctx, s.record(m)); err != nil {
			return err
		}
	}
	rows, err := s.d.store.ListKernels(ctx)
	if err != nil {
		return err
	}
	for _, k := range rows {
		if !onDisk[k.Name] {
			s.d.store.DeleteKernel(ctx, k.Name)
		}
	}
	return nil
}

func (s *KernelService) record(m *kernelcat.Manifest) model.Kernel {
	src := m.Source.Type
	switch {
	case m.Source.Package != "":
		src += ":" + m.Source.Package
	case m.Source.URL != "":
		src += ":" + m.Source.URL
	}
	return model.Kernel{Name: m.Name, Release: m.Release, Format: m.Format, Source: src,
		SizeBytes: m.SizeBytes, Dir: kernelcat.Dir(s.dir, m.Name), PulledAt: m.PulledAt}
}

func (s *KernelService) unknown(name string) error {
	return api.Errorf(api.KindNotFound, "kernel %q is not in the catalog; available: %s (or `banger kernel import`)", name, strings.Join(s.catalog.Names(), ", "))
}

func progressFn(ctx context.Context) kernelcat.Progress {
	return func(stage, msg string, done, total int64) {
		if total < 0 {
			total = 0
		}
		p := api.Progress{Stage: stage, Message: msg, Done: done, Total: total}
		if stage == "download" || stage == "done" { // kernelcat's byte counts
			p.Unit = api.UnitBytes
		}
		report(ctx, p)
	}
}

// KernelPull is the explicit `kernel pull`: a kernel already there is
// already_exists ("already pulled").
func (s *KernelService) KernelPull(ctx context.Context, name string) (*kernelcat.Manifest, error) {
	e, ok := s.catalog.Lookup(name)
	if !ok {
		return nil, s.unknown(name)
	}
	unlock, err := s.kernelPullLock.Lock(ctx, name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if m, err := kernelcat.ReadLocal(s.dir, name); err == nil {
		return m, api.Errorf(api.KindAlreadyExists, "kernel %q already pulled (release %s): `banger kernel rm %s` first to pull it again", name, m.Release, name)
	}
	return s.fetchLocked(ctx, e)
}

// fetchLocked downloads the catalog kernel e and records it.
//
// caller holds s.kernelPullLock[e.Name].
func (s *KernelService) fetchLocked(ctx context.Context, e kernelcat.Entry) (*kernelcat.Manifest, error) {
	op := s.d.beginOperation(ctx, "kernel.pull", "kernel", e.Name)
	op.stage("pull_kernel", e.Name)
	m, err := kernelcat.FetchWith(ctx, e, s.dir, kernelcat.Options{BuildCache: s.d.cfg.KernelBuildCache}, progressFn(ctx))
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, op.fail(api.Errorf(api.KindAlreadyExists, "kernel %q already pulled", e.Name))
		}
		// kernelcat.Fetch already names the kernel in its error.
		return nil, op.fail(api.Errorf(api.KindUnavailable, "%w", err))
	}
	if err := s.d.store.UpsertKernel(ctx, s.record(m)); err != nil {
		return nil, op.fail(err)
	}
	s.d.objectEvent("kernel", "pull", m.Name, m.Name)
	op.done()
	return m, nil
}

// readOrAutoPullKernel returns a local kernel, pulling it from the catalog
// if missing. A peer's pull that finished while we waited for the lock is
// success: we re-read and return it without pulling again.
func (s *KernelService) readOrAutoPullKernel(ctx context.Context, name string) (*kernelcat.Manifest, error) {
	if m, err := kernelcat.ReadLocal(s.dir, name); err == nil {
		return m, nil
	}
	e, ok := s.catalog.Lookup(name)
	if !ok {
		return nil, api.Errorf(api.KindNotFound, "kernel %q not pulled and not in the catalog: run `banger kernel import --name %s …` or pick one of: %s", name, name, strings.Join(s.catalog.Names(), ", "))
	}
	unlock, err := s.kernelPullLock.Lock(ctx, name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if m, err := kernelcat.ReadLocal(s.dir, name); err == nil {
		return m, nil
	}
	report(ctx, api.Progress{Stage: "auto_pull_kernel", Message: name})
	return s.fetchLocked(ctx, e)
}

// Remove deletes a kernel no VM uses and returns what it removed.
func (s *KernelService) Remove(ctx context.Context, name string) (model.Kernel, error) {
	unlock, err := s.kernelPullLock.Lock(ctx, name)
	if err != nil {
		return model.Kernel{}, err
	}
	defer unlock()
	m, err := kernelcat.ReadLocal(s.dir, name)
	if err != nil {
		return model.Kernel{}, api.Errorf(api.KindNotFound, "kernel %q is not pulled: `banger kernel ls` lists pulled kernels", name)
	}
	k := s.record(m)
	vms, err := s.d.store.VMsUsingKernel(ctx, name)
	if err != nil {
		return k, err
	}
	if len(vms) > 0 {
		return k, api.Errorf(api.KindConflict, "kernel %q is used by VM(s) %s: remove them first", name, vmNames(vms))
	}
	if err := kernelcat.Remove(s.dir, name); err != nil {
		return k, err
	}
	s.d.vms.dropWarm(func(sn model.Snapshot) bool { return sn.Spec.Kernel == name })
	return k, s.d.store.DeleteKernel(ctx, name)
}

func vmNames(vms []model.VMRecord) string {
	names := make([]string, len(vms))
	for i, v := range vms {
		names[i] = v.Name
	}
	return strings.Join(names, ", ")
}

// Import makes a kernel from local files.
func (s *KernelService) Import(ctx context.Context, p api.KernelImportParams) (*kernelcat.Manifest, error) {
	if err := kernelcat.ValidateName(p.Name); err != nil {
		return nil, api.Errorf(api.KindInvalidArgument, "%w", err)
	}
	if p.Kernel == "" {
		return nil, api.Errorf(api.KindInvalidArgument, "kernel import: --kernel PATH is required")
	}
	unlock, err := s.kernelPullLock.Lock(ctx, p.Name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if _, err := kernelcat.ReadLocal(s.dir, p.Name); err == nil {
		return nil, api.Errorf(api.KindAlreadyExists, "kernel %q already exists: `banger kernel rm %s` first", p.Name, p.Name)
	}
	op := s.d.beginOperation(ctx, "kernel.import", "kernel", p.Name)
	paths, cleanup, err := s.d.stagePaths(ctx, p.Kernel, p.Initrd, p.Modules)
	if err != nil {
		return nil, op.fail(err)
	}
	defer cleanup()
	m, err := kernelcat.Import(ctx, p.Name, paths[0], paths[1], paths[2], s.dir)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, op.fail(api.Errorf(api.KindAlreadyExists, "kernel %q already exists", p.Name))
		}
		return nil, op.fail(api.Errorf(api.KindInvalidArgument, "import kernel %q: %w", p.Name, err))
	}
	if err := s.d.store.UpsertKernel(ctx, s.record(m)); err != nil {
		return nil, op.fail(err)
	}
	op.done()
	return m, nil
}

// List returns the pulled kernels; the manifests on disk are the truth.
func (s *KernelService) List() []api.Kernel {
	ms, err := kernelcat.List(s.dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.d.log.Warn("kernel list", "err", err)
	}
	out := make([]api.Kernel, 0, len(ms))
	for _, m := range ms {
		out = append(out, api.KernelFromModel(s.record(m)))
	}
	return out
}

// Catalog lists the catalog's kernels and whether each is pulled.
func (s *KernelService) Catalog() []api.CatalogEntry {
	out := []api.CatalogEntry{}
	for _, n := range s.catalog.Names() {
		e, _ := s.catalog.Lookup(n)
		src := e.Source.Type + ":" + e.Source.Package + e.Source.URL
		if e.Source.Config != "" {
			src += "/" + e.Source.Config
		}
		_, err := kernelcat.ReadLocal(s.dir, n)
		// The default this daemon uses: the config's or the driver's
		// choice when set, not only the catalog's.
		out = append(out, api.CatalogEntry{Name: n, Description: e.Description, Source: src, Pulled: err == nil, Default: n == s.d.defaultKernel("")})
	}
	return out
}
