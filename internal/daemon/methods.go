package daemon

import (
	"context"
	"os"

	"banger/api"
	"banger/internal/model"
)

// registerMethods is the daemon's whole RPC surface: each method's params
// type, result type and the service call behind it. Handlers stay thin: a
// service does the work, api.*From* shapes the answer.
func (d *Daemon) registerMethods() {
	method(d, api.MethodPing, func(ctx context.Context, _ struct{}) (api.PingResult, error) {
		return api.PingResult{Version: Version, Protocol: api.ProtocolVersion, PID: os.Getpid(), StateDir: d.cfg.StateDir}, nil
	})
	method(d, api.MethodDoctor, func(ctx context.Context, _ struct{}) (api.DoctorResult, error) {
		return d.doctor(), nil
	})
	method(d, api.MethodDNSSetup, func(ctx context.Context, _ struct{}) (api.DNSResult, error) {
		if err := rootOnly(ctx, "dns setup"); err != nil {
			return api.DNSResult{}, err
		}
		return d.net.resolvedSetup(false)
	})
	method(d, api.MethodDNSTeardown, func(ctx context.Context, _ struct{}) (api.DNSResult, error) {
		if err := rootOnly(ctx, "dns teardown"); err != nil {
			return api.DNSResult{}, err
		}
		return d.net.resolvedSetup(true)
	})
	method(d, api.MethodSSHKeyRotate, func(ctx context.Context, _ struct{}) (api.SSHKeyRotateResult, error) {
		if err := rootOnly(ctx, "ssh-key rotate"); err != nil {
			return api.SSHKeyRotateResult{}, err
		}
		return d.rotateKey(ctx)
	})
	d.registerVMMethods()
	d.registerImageMethods()
	d.registerKernelMethods()
}

func (d *Daemon) registerVMMethods() {
	s := d.vms
	method(d, api.MethodVMCreate, func(ctx context.Context, p api.VMCreateParams) (api.VM, error) {
		return vmResult(s.CreateVM(ctx, p))
	})
	method(d, api.MethodVMList, s.List)
	method(d, api.MethodVMGet, func(ctx context.Context, p api.NameParams) (api.VM, error) {
		return vmResult(s.find(ctx, p.Name))
	})
	method(d, api.MethodVMDelete, func(ctx context.Context, p api.VMDeleteParams) (api.VM, error) {
		return vmResult(s.DeleteVM(ctx, p.Name, p.Force, p.WithSnapshots))
	})
	method(d, api.MethodVMStart, func(ctx context.Context, p api.NameParams) (api.VM, error) {
		return vmResult(s.StartVM(ctx, p.Name))
	})
	method(d, api.MethodVMRestart, func(ctx context.Context, p api.NameParams) (api.VM, error) {
		return vmResult(s.RestartVM(ctx, p.Name))
	})
	method(d, api.MethodVMStop, func(ctx context.Context, p api.VMStopParams) (api.VM, error) {
		return vmResult(s.StopVM(ctx, p.Name, p.Force))
	})
	method(d, api.MethodVMPause, func(ctx context.Context, p api.NameParams) (api.VM, error) {
		return vmResult(s.PauseVM(ctx, p.Name))
	})
	method(d, api.MethodVMResume, func(ctx context.Context, p api.NameParams) (api.VM, error) {
		return vmResult(s.ResumeVM(ctx, p.Name))
	})
	method(d, api.MethodVMSnapshot, func(ctx context.Context, p api.VMSnapshotParams) (api.Snapshot, error) {
		return snapshotResult(s.SnapshotVM(ctx, p))
	})
	method(d, api.MethodVMFork, func(ctx context.Context, p api.VMForkParams) (api.VM, error) {
		return vmResult(s.ForkVM(ctx, p))
	})
	method(d, api.MethodSnapshotList, func(ctx context.Context, _ struct{}) ([]api.Snapshot, error) {
		sns, err := s.listSnapshots(ctx)
		if err != nil {
			return nil, err
		}
		out := make([]api.Snapshot, 0, len(sns))
		for _, sn := range sns {
			out = append(out, api.SnapshotFromModel(sn))
		}
		return out, nil
	})
	method(d, api.MethodSnapshotGet, func(ctx context.Context, p api.NameParams) (api.Snapshot, error) {
		return snapshotResult(s.findSnapshot(ctx, p.Name))
	})
	method(d, api.MethodSnapshotDel, func(ctx context.Context, p api.NameParams) (api.Snapshot, error) {
		return snapshotResult(s.DeleteSnapshot(ctx, p.Name))
	})
	method(d, api.MethodVMExec, s.Exec)
	method(d, api.MethodVMLogs, s.Logs)
	method(d, api.MethodVMPrune, func(ctx context.Context, _ struct{}) (api.VMPruneResult, error) {
		return s.Prune(ctx)
	})
	method(d, api.MethodVMSSHInfo, s.sshInfo)
	method(d, api.MethodVMStats, s.Stats)
	// vm.proxy answers and then owns the connection: not a method.
	stream[api.NameParams](d, api.MethodVMProxy, s.proxy)
	stream[api.EventsParams](d, api.MethodEvents, d.eventsStream)
}

func (d *Daemon) registerImageMethods() {
	s := d.images
	method(d, api.MethodImagePull, func(ctx context.Context, p api.ImagePullParams) (api.Image, error) {
		return imageResult(s.PullImage(ctx, p.Ref, p.Name))
	})
	method(d, api.MethodImageImport, func(ctx context.Context, p api.ImageImportParams) (api.Image, error) {
		return imageResult(s.ImportImage(ctx, p.Path, p.Name, p.Kernel))
	})
	method(d, api.MethodImageList, func(ctx context.Context, _ struct{}) ([]api.Image, error) {
		imgs, err := d.store.ListImages(ctx)
		if err != nil {
			return nil, err
		}
		out := make([]api.Image, 0, len(imgs))
		for _, i := range imgs {
			out = append(out, api.ImageFromModel(i))
		}
		return out, nil
	})
	method(d, api.MethodImageDelete, func(ctx context.Context, p api.NameParams) (api.Image, error) {
		if err := rootOnly(ctx, "image rm"); err != nil {
			return api.Image{}, err
		}
		return imageResult(s.RemoveImage(ctx, p.Name))
	})
	method(d, api.MethodImageCatalog, func(ctx context.Context, _ struct{}) ([]api.CatalogEntry, error) {
		return s.Catalog(ctx), nil
	})
}

func (d *Daemon) registerKernelMethods() {
	s := d.kernels
	method(d, api.MethodKernelPull, func(ctx context.Context, p api.NameParams) (api.Kernel, error) {
		m, err := s.KernelPull(ctx, p.Name)
		if err != nil {
			return api.Kernel{}, err
		}
		return api.KernelFromModel(s.record(m)), nil
	})
	method(d, api.MethodKernelImport, func(ctx context.Context, p api.KernelImportParams) (api.Kernel, error) {
		m, err := s.Import(ctx, p)
		if err != nil {
			return api.Kernel{}, err
		}
		return api.KernelFromModel(s.record(m)), nil
	})
	method(d, api.MethodKernelList, func(ctx context.Context, _ struct{}) ([]api.Kernel, error) {
		return s.List(), nil
	})
	method(d, api.MethodKernelDelete, func(ctx context.Context, p api.NameParams) (api.Kernel, error) {
		if err := rootOnly(ctx, "kernel rm"); err != nil {
			return api.Kernel{}, err
		}
		k, err := s.Remove(ctx, p.Name)
		if err != nil {
			return api.Kernel{}, err
		}
		return api.KernelFromModel(k), nil
	})
	method(d, api.MethodKernelCatalog, func(ctx context.Context, _ struct{}) ([]api.CatalogEntry, error) {
		return s.Catalog(), nil
	})
}

// vmResult is the wire answer of a call that returns one VM record.
func vmResult(rec model.VMRecord, err error) (api.VM, error) {
	if err != nil {
		return api.VM{}, err
	}
	return api.VMFromRecord(rec), nil
}

// snapshotResult is the wire answer of a call that returns one snapshot.
func snapshotResult(sn model.Snapshot, err error) (api.Snapshot, error) {
	if err != nil {
		return api.Snapshot{}, err
	}
	return api.SnapshotFromModel(sn), nil
}

// imageResult is the wire answer of a call that returns one image.
func imageResult(img model.Image, err error) (api.Image, error) {
	if err != nil {
		return api.Image{}, err
	}
	return api.ImageFromModel(img), nil
}
