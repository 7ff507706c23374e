package client

import (
	"context"

	"banger/api"
)

// rpcMethods maps each daemon method to the Client method that calls it;
// a test checks it against the daemon's method table.
var rpcMethods = map[string]string{
	api.MethodPing:          "Ping",
	api.MethodDoctor:        "Doctor",
	api.MethodDNSSetup:      "DNSSetup",
	api.MethodDNSTeardown:   "DNSTeardown",
	api.MethodSSHKeyRotate:  "RotateSSHKey",
	api.MethodEvents:        "Events",
	api.MethodVMCreate:      "CreateVM",
	api.MethodVMList:        "ListVMs",
	api.MethodVMGet:         "InspectVM",
	api.MethodVMDelete:      "RemoveVM",
	api.MethodVMStart:       "StartVM",
	api.MethodVMRestart:     "RestartVM",
	api.MethodVMStop:        "StopVM",
	api.MethodVMPause:       "PauseVM",
	api.MethodVMResume:      "ResumeVM",
	api.MethodVMSnapshot:    "SnapshotVM",
	api.MethodVMFork:        "ForkVM",
	api.MethodVMExec:        "ExecOutput",
	api.MethodVMLogs:        "Logs",
	api.MethodVMPrune:       "PruneVMs",
	api.MethodVMStats:       "VMStats",
	api.MethodVMSSHInfo:     "SSHInfo",
	api.MethodVMProxy:       "Proxy",
	api.MethodSnapshotList:  "ListSnapshots",
	api.MethodSnapshotGet:   "InspectSnapshot",
	api.MethodSnapshotDel:   "RemoveSnapshot",
	api.MethodImagePull:     "PullImage",
	api.MethodImageImport:   "ImportImage",
	api.MethodImageList:     "ListImages",
	api.MethodImageDelete:   "RemoveImage",
	api.MethodImageCatalog:  "ImageCatalog",
	api.MethodKernelPull:    "PullKernel",
	api.MethodKernelImport:  "ImportKernel",
	api.MethodKernelList:    "ListKernels",
	api.MethodKernelDelete:  "RemoveKernel",
	api.MethodKernelCatalog: "KernelCatalog",
}

// Ping (daemon.ping) returns the daemon's version, protocol version, pid
// and state dir.
func (c *Client) Ping(ctx context.Context) (api.PingResult, error) {
	return call[api.PingResult](ctx, c, api.MethodPing, nil)
}

// Doctor (daemon.doctor) checks the host: tools, devices, the hypervisor
// backend in use and why.
func (c *Client) Doctor(ctx context.Context) (api.DoctorResult, error) {
	return call[api.DoctorResult](ctx, c, api.MethodDoctor, nil)
}

// DNSSetup (dns.setup, root only) points systemd-resolved at the daemon's
// DNS for the VM domain.
func (c *Client) DNSSetup(ctx context.Context) (api.DNSResult, error) {
	return call[api.DNSResult](ctx, c, api.MethodDNSSetup, nil)
}

// DNSTeardown (dns.teardown, root only) undoes DNSSetup.
func (c *Client) DNSTeardown(ctx context.Context) (api.DNSResult, error) {
	return call[api.DNSResult](ctx, c, api.MethodDNSTeardown, nil)
}

// RotateSSHKey (sshkey.rotate, root only) replaces the daemon's SSH key
// and pushes the new one to images and running VMs.
func (c *Client) RotateSSHKey(ctx context.Context) (api.SSHKeyRotateResult, error) {
	return call[api.SSHKeyRotateResult](ctx, c, api.MethodSSHKeyRotate, nil)
}

// CreateVM (vm.create) creates a VM and, unless p.NoStart, boots it and
// returns once its agent answers. progress receives each stage (reserve,
// disks, boot, ...; the VM's id from the reservation on) and may be nil.
// When ctx ends mid-create the daemon undoes what it did; a VM whose id a
// progress event named may still need RemoveVM if the daemon was
// unreachable at that moment.
func (c *Client) CreateVM(ctx context.Context, p api.VMCreateParams, progress func(api.Progress)) (api.VM, error) {
	return callProgress[api.VM](ctx, c, api.MethodVMCreate, p, progress)
}

// ListVMs (vm.list) lists VMs: running ones, or all with p.All, matching
// every p.Filters entry (label=K[=V], state=, image=, name=).
func (c *Client) ListVMs(ctx context.Context, p api.VMListParams) ([]api.VM, error) {
	return call[[]api.VM](ctx, c, api.MethodVMList, p)
}

// InspectVM (vm.get) returns one VM by name or id.
func (c *Client) InspectVM(ctx context.Context, name string) (api.VM, error) {
	return call[api.VM](ctx, c, api.MethodVMGet, api.NameParams{Name: name})
}

// RemoveVM (vm.delete) removes a VM and its disks; a running one only
// with p.Force; its snapshots only with p.WithSnapshots.
func (c *Client) RemoveVM(ctx context.Context, p api.VMDeleteParams) (api.VM, error) {
	return call[api.VM](ctx, c, api.MethodVMDelete, p)
}

// StartVM (vm.start) boots a stopped VM.
func (c *Client) StartVM(ctx context.Context, name string) (api.VM, error) {
	return call[api.VM](ctx, c, api.MethodVMStart, api.NameParams{Name: name})
}

// RestartVM (vm.restart) stops and boots a VM.
func (c *Client) RestartVM(ctx context.Context, name string) (api.VM, error) {
	return call[api.VM](ctx, c, api.MethodVMRestart, api.NameParams{Name: name})
}

// StopVM (vm.stop) powers a VM off cleanly, or kills its VMM with force.
func (c *Client) StopVM(ctx context.Context, name string, force bool) (api.VM, error) {
	return call[api.VM](ctx, c, api.MethodVMStop, api.VMStopParams{Name: name, Force: force})
}

// PauseVM (vm.pause) stops a VM's vCPUs; memory and connections stay.
func (c *Client) PauseVM(ctx context.Context, name string) (api.VM, error) {
	return call[api.VM](ctx, c, api.MethodVMPause, api.NameParams{Name: name})
}

// ResumeVM (vm.resume) runs a paused VM again.
func (c *Client) ResumeVM(ctx context.Context, name string) (api.VM, error) {
	return call[api.VM](ctx, c, api.MethodVMResume, api.NameParams{Name: name})
}

// SnapshotVM (vm.snapshot) snapshots a running VM (memory and disks).
func (c *Client) SnapshotVM(ctx context.Context, p api.VMSnapshotParams) (api.Snapshot, error) {
	return call[api.Snapshot](ctx, c, api.MethodVMSnapshot, p)
}

// ForkVM (vm.fork) starts a new VM from a snapshot of a running one.
func (c *Client) ForkVM(ctx context.Context, p api.VMForkParams) (api.VM, error) {
	return call[api.VM](ctx, c, api.MethodVMFork, p)
}

// ExecOutput (vm.exec) runs p.Cmd in the VM through the daemon's agent
// channel and returns its exit code and captured output. For streamed
// stdio use Exec.
func (c *Client) ExecOutput(ctx context.Context, p api.ExecParams) (api.ExecResult, error) {
	return call[api.ExecResult](ctx, c, api.MethodVMExec, p)
}

// Logs (vm.logs) returns the VM's console log from offset on, the offset
// to ask from next, and the VM's state. FollowLogs loops over it.
func (c *Client) Logs(ctx context.Context, name string, offset int64) (api.LogsResult, error) {
	return call[api.LogsResult](ctx, c, api.MethodVMLogs, api.LogsParams{Name: name, Offset: offset})
}

// VMStats (vm.stats) returns each named VM's CPU, memory, disk and network
// use as the host sees it; no names: every running VM.
func (c *Client) VMStats(ctx context.Context, names []string) ([]api.VMStats, error) {
	return call[[]api.VMStats](ctx, c, api.MethodVMStats, api.VMStatsParams{Names: names})
}

// PruneVMs (vm.prune) removes every stopped VM.
func (c *Client) PruneVMs(ctx context.Context) (api.VMPruneResult, error) {
	return call[api.VMPruneResult](ctx, c, api.MethodVMPrune, nil)
}

// SSHInfo (vm.ssh_info) says how to reach the VM's SSH server, and
// authorizes p.PublicKey in it first when set. Guest does this for you.
func (c *Client) SSHInfo(ctx context.Context, p api.SSHInfoParams) (api.SSHInfo, error) {
	return call[api.SSHInfo](ctx, c, api.MethodVMSSHInfo, p)
}

// ListSnapshots (snapshot.list) lists every snapshot.
func (c *Client) ListSnapshots(ctx context.Context) ([]api.Snapshot, error) {
	return call[[]api.Snapshot](ctx, c, api.MethodSnapshotList, nil)
}

// InspectSnapshot (snapshot.get) returns one snapshot by name or id.
func (c *Client) InspectSnapshot(ctx context.Context, name string) (api.Snapshot, error) {
	return call[api.Snapshot](ctx, c, api.MethodSnapshotGet, api.NameParams{Name: name})
}

// RemoveSnapshot (snapshot.delete) removes a snapshot.
func (c *Client) RemoveSnapshot(ctx context.Context, name string) (api.Snapshot, error) {
	return call[api.Snapshot](ctx, c, api.MethodSnapshotDel, api.NameParams{Name: name})
}

// PullImage (image.pull) pulls an OCI image (or a catalog name) and
// builds its rootfs; progress (may be nil) receives stages and bytes.
func (c *Client) PullImage(ctx context.Context, p api.ImagePullParams, progress func(api.Progress)) (api.Image, error) {
	return callProgress[api.Image](ctx, c, api.MethodImagePull, p, progress)
}

// ImportImage (image.import) imports an OCI layout or tarball from a path
// the daemon can read.
func (c *Client) ImportImage(ctx context.Context, p api.ImageImportParams, progress func(api.Progress)) (api.Image, error) {
	return callProgress[api.Image](ctx, c, api.MethodImageImport, p, progress)
}

// ListImages (image.list) lists the images.
func (c *Client) ListImages(ctx context.Context) ([]api.Image, error) {
	return call[[]api.Image](ctx, c, api.MethodImageList, nil)
}

// RemoveImage (image.delete, root only) removes an image.
func (c *Client) RemoveImage(ctx context.Context, name string) (api.Image, error) {
	return call[api.Image](ctx, c, api.MethodImageDelete, api.NameParams{Name: name})
}

// ImageCatalog (image.catalog) lists the images PullImage knows by name.
func (c *Client) ImageCatalog(ctx context.Context) ([]api.CatalogEntry, error) {
	return call[[]api.CatalogEntry](ctx, c, api.MethodImageCatalog, nil)
}

// PullKernel (kernel.pull) pulls a catalog kernel.
func (c *Client) PullKernel(ctx context.Context, name string, progress func(api.Progress)) (api.Kernel, error) {
	return callProgress[api.Kernel](ctx, c, api.MethodKernelPull, api.NameParams{Name: name}, progress)
}

// ImportKernel (kernel.import) imports a kernel (and initrd, modules)
// from paths the daemon can read.
func (c *Client) ImportKernel(ctx context.Context, p api.KernelImportParams, progress func(api.Progress)) (api.Kernel, error) {
	return callProgress[api.Kernel](ctx, c, api.MethodKernelImport, p, progress)
}

// ListKernels (kernel.list) lists the kernels.
func (c *Client) ListKernels(ctx context.Context) ([]api.Kernel, error) {
	return call[[]api.Kernel](ctx, c, api.MethodKernelList, nil)
}

// RemoveKernel (kernel.delete, root only) removes a kernel.
func (c *Client) RemoveKernel(ctx context.Context, name string) (api.Kernel, error) {
	return call[api.Kernel](ctx, c, api.MethodKernelDelete, api.NameParams{Name: name})
}

// KernelCatalog (kernel.catalog) lists the kernels PullKernel knows.
func (c *Client) KernelCatalog(ctx context.Context) ([]api.CatalogEntry, error) {
	return call[[]api.CatalogEntry](ctx, c, api.MethodKernelCatalog, nil)
}

// GoMethod names the Client method that calls the daemon method rpc
// ("vm.create" → "CreateVM"), "" for a method this package does not know.
func GoMethod(rpc string) string { return rpcMethods[rpc] }
