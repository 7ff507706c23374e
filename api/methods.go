package api

import (
	"time"

	"banger/internal/model"
)

// Types of internal/model that the wire carries as they are, named here so
// SDK users can spell them.
type (
	VMState     = model.VMState
	PortForward = model.PortForward
	MainProcess = model.MainProcess
	ImageConfig = model.ImageConfig
)

// Method names, noun.verb.
const (
	MethodPing         = "daemon.ping"
	MethodVMCreate     = "vm.create"
	MethodVMList       = "vm.list"
	MethodVMGet        = "vm.get"
	MethodVMDelete     = "vm.delete"
	MethodVMStart      = "vm.start"
	MethodVMStop       = "vm.stop"
	MethodVMRestart    = "vm.restart"
	MethodVMPause      = "vm.pause"
	MethodVMSnapshot   = "vm.snapshot"
	MethodVMFork       = "vm.fork"
	MethodSnapshotList = "snapshot.list"
	MethodSnapshotGet  = "snapshot.get"
	MethodSnapshotDel  = "snapshot.delete"
	MethodVMResume     = "vm.resume"
	MethodVMExec       = "vm.exec"
	MethodVMLogs       = "vm.logs"
	MethodVMPrune      = "vm.prune"
	MethodVMSSHInfo    = "vm.ssh_info"
	MethodVMStats      = "vm.stats"
	// MethodEvents turns the connection into a stream of Event lines.
	MethodEvents        = "daemon.events"
	MethodVMProxy       = "vm.proxy"
	MethodImagePull     = "image.pull"
	MethodImageImport   = "image.import"
	MethodImageList     = "image.list"
	MethodImageDelete   = "image.delete"
	MethodImageCatalog  = "image.catalog"
	MethodKernelPull    = "kernel.pull"
	MethodKernelImport  = "kernel.import"
	MethodKernelList    = "kernel.list"
	MethodKernelDelete  = "kernel.delete"
	MethodKernelCatalog = "kernel.catalog"
	MethodSSHKeyRotate  = "sshkey.rotate"
	MethodDoctor        = "daemon.doctor"
	MethodDNSSetup      = "dns.setup"
	MethodDNSTeardown   = "dns.teardown"
)

// PingResult answers daemon.ping.
type PingResult struct {
	Version string `json:"version"`
	// Protocol is the daemon's ProtocolVersion (0 from a daemon older
	// than the field).
	Protocol int    `json:"protocol"`
	PID      int    `json:"pid"`
	StateDir string `json:"state_dir"`
}

// VMCreateParams are the params of vm.create. Sizes are strings so every
// caller goes through the same ParseSize ("2G", "512M", bytes).
type VMCreateParams struct {
	Name              string   `json:"name,omitempty"`
	Image             string   `json:"image,omitempty"`
	Kernel            string   `json:"kernel,omitempty"`
	VCPU              int      `json:"vcpu,omitempty"`
	MemoryMiB         int      `json:"memory_mib,omitempty"`
	SystemOverlaySize string   `json:"system_overlay_size,omitempty"`
	WorkDiskSize      string   `json:"work_disk_size,omitempty"`
	NAT               bool     `json:"nat,omitempty"`
	Ports             []string `json:"ports,omitempty"`
	NoStart           bool     `json:"no_start,omitempty"`
	// Init is the init mode: auto (default: the image's, else auto),
	// banger or image.
	Init string `json:"init,omitempty"`
	// Cmd and Entrypoint override the image's (a set Entrypoint, even
	// empty, also drops the image's Cmd, as in Docker).
	Cmd        []string  `json:"cmd,omitempty"`
	Entrypoint *[]string `json:"entrypoint,omitempty"`
	// Env (KEY=VALUE) is added to the image's Env for the main process and
	// every exec; WorkingDir and User (USER[:GROUP]) apply to the main
	// process.
	Env        []string `json:"env,omitempty"`
	WorkingDir string   `json:"working_dir,omitempty"`
	User       string   `json:"user,omitempty"`
	// Restart is the main process's policy: no (default), on-failure,
	// always.
	Restart string `json:"restart,omitempty"`
	// From starts the VM from a snapshot (name or id) instead of booting:
	// the image, kernel, vCPUs, memory, disks and processes are the
	// snapshot's, so only Name, NAT and Ports may be given with it.
	From string `json:"from,omitempty"`
	// Warm and Cold choose a fresh create's start: Warm restores the
	// daemon's boot snapshot of the VM's shape (taken at the first boot
	// of that shape) even when the daemon's warm_start is off; Cold
	// always boots.
	Warm bool `json:"warm,omitempty"`
	Cold bool `json:"cold,omitempty"`
	// Foreground: the caller (`vm run`) runs the command attached, so
	// banger-init must not start it; it is still resolved and returned
	// as the VM's main (attached).
	Foreground bool `json:"foreground,omitempty"`
	// Labels are the caller's KEY=VALUE tags (filters: label=KEY[=VALUE]).
	Labels map[string]string `json:"labels,omitempty"`
	// TTL (a Go duration, e.g. "30m"): the daemon removes the VM when it
	// expires, also across daemon restarts.
	TTL string `json:"ttl,omitempty"`
	// IdleStop (a Go duration, e.g. "10m"): the daemon stops the VM after
	// that long with no exec, ssh, proxy or port-forward traffic and no
	// guest CPU; a later start runs it again.
	IdleStop string `json:"idle_stop,omitempty"`
	// Provision are first-boot scripts, run in order as root once, at the
	// VM's first boot, after the network is up (the CLI's --provision: it
	// reads the files, with its user's rights, and sends their contents).
	Provision []ProvisionScript `json:"provision,omitempty"`
	// CopyTar is a tar extracted at / in the guest before the scripts run
	// (the CLI's --copy HOST:GUEST; entry names are guest paths without
	// the leading slash).
	CopyTar []byte `json:"copy_tar,omitempty"`
	// Shares are host directories the guest mounts at every boot, each
	// HOSTDIR:GUESTDIR[:ro] with an absolute HOSTDIR (-v). The daemon
	// checks them with the caller's rights.
	Shares []string `json:"shares,omitempty"`
}

// ProvisionScript is one first-boot script.
type ProvisionScript struct {
	// Name is the file's base name (shown in progress and errors).
	Name   string `json:"name"`
	Script []byte `json:"script"`
}

// EventsParams are the params of daemon.events (a stream of Event JSON
// lines): Filters type=, action=, name=, id= (values of one key OR, keys
// AND).
type EventsParams struct {
	Filters []string `json:"filters,omitempty"`
}

// Event is something that happened: Type vm (Action create, start, stop,
// die, rm), image or kernel (pull).
type Event struct {
	Time   string            `json:"time"` // RFC 3339, UTC
	Type   string            `json:"type"`
	Action string            `json:"action"`
	ID     string            `json:"id"`
	Name   string            `json:"name"`
	Attrs  map[string]string `json:"attrs,omitempty"`
}

// VMRef names one VM by name or id.
type VMRef struct {
	Name string `json:"name"`
}

// VMListParams are the params of vm.list.
type VMListParams struct {
	All bool `json:"all,omitempty"`
	// Filters, all of which a VM must match: label=KEY, label=KEY=VALUE,
	// state=STATE, image=IMAGE, name=NAME. A state filter lists stopped
	// VMs without All.
	Filters []string `json:"filters,omitempty"`
}

// VMStopParams are the params of vm.stop.
type VMStopParams struct {
	Name  string `json:"name"`
	Force bool   `json:"force,omitempty"`
}

// VMDeleteParams are the params of vm.delete.
type VMDeleteParams struct {
	Name  string `json:"name"`
	Force bool   `json:"force,omitempty"`
	// WithSnapshots also removes the VM's snapshots (kept by default).
	WithSnapshots bool `json:"with_snapshots,omitempty"`
}

// VMSnapshotParams are the params of vm.snapshot.
type VMSnapshotParams struct {
	Name string `json:"name"`
	// Snapshot names the snapshot (a DNS label); generated if empty.
	Snapshot string `json:"snapshot,omitempty"`
}

// VMForkParams are the params of vm.fork: a new VM (NewName, generated if
// empty) from a snapshot of the running VM Name taken for it and removed
// after.
type VMForkParams struct {
	Name    string   `json:"name"`
	NewName string   `json:"new_name,omitempty"`
	NAT     bool     `json:"nat,omitempty"`
	Ports   []string `json:"ports,omitempty"`
}

// Snapshot is a snapshot as the API shows it.
type Snapshot struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	SourceVM   string `json:"source_vm"`
	SourceVMID string `json:"source_vm_id"`
	Image      string `json:"image"`
	Kernel     string `json:"kernel,omitempty"`
	VCPU       int    `json:"vcpu"`
	MemoryMiB  int    `json:"memory_mib"`
	VMM        string `json:"vmm"`
	StateBytes int64  `json:"state_bytes"`
	DiskBytes  int64  `json:"disk_bytes"`
	// PausedMs is how long the source was paused to take it.
	PausedMs  int64  `json:"paused_ms"`
	Dir       string `json:"dir,omitempty"`
	CreatedAt string `json:"created_at"`
}

// SnapshotFromModel flattens a snapshot for the wire.
func SnapshotFromModel(s model.Snapshot) Snapshot {
	return Snapshot{ID: s.ID, Name: s.Name, SourceVM: s.SourceName, SourceVMID: s.SourceID,
		Image: s.Spec.Image, Kernel: s.Spec.Kernel, VCPU: s.Spec.VCPU, MemoryMiB: s.Spec.MemoryMiB,
		VMM: s.VMM, StateBytes: s.StateBytes, DiskBytes: s.DiskBytes, PausedMs: s.Paused.Milliseconds(),
		Dir: s.Dir, CreatedAt: s.CreatedAt.UTC().Format("2006-01-02T15:04:05Z")}
}

// VMPruneResult lists the removed VMs.
type VMPruneResult struct {
	Removed []string `json:"removed"`
}

// VM is a VM as the API shows it: flat, with the fields scripts use most.
type VM struct {
	ID                string              `json:"id"`
	Name              string              `json:"name"`
	State             model.VMState       `json:"state"`
	Image             string              `json:"image"`
	Kernel            string              `json:"kernel,omitempty"`
	GuestIP           string              `json:"guest_ip"`
	DNSName           string              `json:"dns_name"`
	VCPU              int                 `json:"vcpu"`
	MemoryMiB         int                 `json:"memory_mib"`
	SystemOverlaySize int64               `json:"system_overlay_size"`
	WorkDiskSize      int64               `json:"work_disk_size"`
	NAT               bool                `json:"nat"`
	Ports             []model.PortForward `json:"ports,omitempty"`
	MAC               string              `json:"mac,omitempty"`
	VMM               string              `json:"vmm,omitempty"`
	PID               int                 `json:"pid,omitempty"`
	Dir               string              `json:"dir,omitempty"`
	LastError         string              `json:"last_error,omitempty"`
	CreatedAt         string              `json:"created_at"`
	Init              string              `json:"init"`                   // asked for: auto, banger, image
	InitRunning       string              `json:"init_running,omitempty"` // what the last boot ran as
	InitPath          string              `json:"init_path,omitempty"`
	Env               []string            `json:"env,omitempty"`
	Main              *model.MainProcess  `json:"main,omitempty"`
	MainExitCode      *int                `json:"main_exit_code,omitempty"`
	Labels            map[string]string   `json:"labels,omitempty"`
	ExpiresAt         string              `json:"expires_at,omitempty"` // --ttl
	IdleStop          string              `json:"idle_stop,omitempty"`  // --idle-stop, a Go duration
	// Provision is the first-boot provisioning: "" (none), "pending",
	// "running" (began; never re-run), "done" or "failed".
	Provision string `json:"provision,omitempty"`
	// Start is how the last start got the guest running: cold (boot),
	// warm (the daemon's boot snapshot of this shape) or snapshot.
	Start string `json:"start,omitempty"`
	// Shares are the host directories the guest mounts (-v).
	Shares []Share `json:"shares,omitempty"`
}

// Share is one -v share as vm inspect shows it.
type Share struct {
	Host     string `json:"host"`
	Guest    string `json:"guest"`
	ReadOnly bool   `json:"read_only"`
	// Transport is virtiofs or 9p: how the last start served it ("" before
	// the first start).
	Transport string `json:"transport,omitempty"`
}

// VMFromRecord flattens a record for the wire.
func VMFromRecord(r model.VMRecord) VM {
	v := VM{
		ID: r.ID, Name: r.Name, State: r.State, Image: r.Spec.Image, Kernel: r.Spec.Kernel,
		GuestIP: r.Runtime.GuestIP, DNSName: r.DNSName(), VCPU: r.Spec.VCPU, MemoryMiB: r.Spec.MemoryMiB,
		SystemOverlaySize: r.Spec.SystemOverlaySize, WorkDiskSize: r.Spec.WorkDiskSize, NAT: r.Spec.NAT,
		Ports: r.Spec.Ports, MAC: r.Runtime.MAC, VMM: r.Runtime.VMM, PID: r.Runtime.PID, Dir: r.Runtime.Dir,
		LastError: r.Runtime.LastError, CreatedAt: r.CreatedAt.UTC().Format("2006-01-02T15:04:05Z"),
		Init: r.Spec.Init, InitRunning: r.Runtime.Init, InitPath: r.Runtime.InitPath,
		Env: r.Spec.Env, Main: r.Spec.Main, MainExitCode: r.Runtime.MainExit,
		Labels: r.Spec.Labels, Provision: r.ProvisionState(), Start: r.Runtime.Start,
	}
	if !r.Spec.ExpiresAt.IsZero() {
		v.ExpiresAt = r.Spec.ExpiresAt.UTC().Format(time.RFC3339)
	}
	if r.Spec.IdleStop > 0 {
		v.IdleStop = r.Spec.IdleStop.String()
	}
	if v.Init == "" {
		v.Init = "auto"
	}
	for _, sh := range r.Spec.Shares {
		v.Shares = append(v.Shares, Share{Host: sh.HostPath, Guest: sh.GuestPath, ReadOnly: sh.ReadOnly, Transport: r.Runtime.ShareTransport})
	}
	return v
}

// NameParams is the params of calls that take one name.
type NameParams struct {
	Name string `json:"name"`
}

// ImagePullParams are the params of image.pull.
type ImagePullParams struct {
	Ref  string `json:"ref"`
	Name string `json:"name,omitempty"`
}

// ImageImportParams are the params of image.import.
type ImageImportParams struct {
	Path   string `json:"path"`
	Name   string `json:"name"`
	Kernel string `json:"kernel,omitempty"`
}

// KernelImportParams are the params of kernel.import.
type KernelImportParams struct {
	Name    string `json:"name"`
	Kernel  string `json:"kernel"`
	Initrd  string `json:"initrd,omitempty"`
	Modules string `json:"modules,omitempty"`
}

// CatalogEntry is one pullable catalog item.
type CatalogEntry struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Source      string `json:"source"`
	Kernel      string `json:"kernel,omitempty"`
	Pulled      bool   `json:"pulled"`
	Default     bool   `json:"default,omitempty"`
}

// ExecParams are the params of vm.exec (non-interactive; output returned).
type ExecParams struct {
	Name  string   `json:"name"`
	Cmd   []string `json:"cmd"`
	Stdin string   `json:"stdin,omitempty"`
	// Env (KEY=VALUE) overrides the VM's env; WorkingDir and User
	// (USER[:GROUP], looked up in the guest) default to root in /root.
	Env        []string `json:"env,omitempty"`
	WorkingDir string   `json:"working_dir,omitempty"`
	User       string   `json:"user,omitempty"`
}

// ExecResult is the outcome of vm.exec.
type ExecResult struct {
	ExitCode int    `json:"exit_code"`
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
}

// LogsParams are the params of vm.logs.
type LogsParams struct {
	Name   string `json:"name"`
	Offset int64  `json:"offset,omitempty"`
}

// LogsResult is a chunk of the console log.
type LogsResult struct {
	Data   string `json:"data"`
	Offset int64  `json:"offset"`
	State  string `json:"state"`
}

// SSHInfoParams are the params of vm.ssh_info. PublicKey, when set, is
// the caller's own OpenSSH public key: the daemon authorizes it in the
// guest (once; the VM's owner only) before it answers.
type SSHInfoParams struct {
	Name      string `json:"name"`
	PublicKey string `json:"public_key,omitempty"`
}

// SSHInfo tells the CLI how to reach a VM with the system ssh.
type SSHInfo struct {
	Name    string `json:"name"`
	GuestIP string `json:"guest_ip"`
	// KeyPath is the daemon's private key, given to root callers only (an
	// older CLI's fallback); every other caller uses its own key.
	KeyPath string `json:"key_path,omitempty"`
	// KnownHosts is the daemon's known_hosts file for the VM (root
	// only: the state dir is private); HostKeys is its content, which
	// every caller gets to verify the guest with.
	HostKeys   string `json:"host_keys,omitempty"`
	KnownHosts string `json:"known_hosts"`
	AgentPath  string `json:"agent_path,omitempty"`
}

// DoctorCheck is one line of `banger doctor`.
type DoctorCheck struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// DoctorResult is the outcome of daemon.doctor.
type DoctorResult struct {
	Checks  []DoctorCheck `json:"checks"`
	Backend string        `json:"backend"`
	Why     string        `json:"why"`
}

// Image is an image as the API shows it (image.pull, image.import,
// image.list, image.delete).
type Image struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Source string `json:"source"`
	Digest string `json:"digest,omitempty"`
	Kernel string `json:"kernel,omitempty"`
	// SizeBytes is the rootfs size.
	SizeBytes int64  `json:"size_bytes"`
	Dir       string `json:"dir"`
	// KeyFingerprint is the daemon key its work seed authorizes.
	KeyFingerprint string            `json:"key_fingerprint,omitempty"`
	Config         model.ImageConfig `json:"config"`
	CreatedAt      time.Time         `json:"created_at"`
}

// ImageFromModel is the wire form of a stored image.
func ImageFromModel(i model.Image) Image {
	return Image{
		ID: i.ID, Name: i.Name, Source: i.Source, Digest: i.Digest, Kernel: i.Kernel,
		SizeBytes: i.SizeBytes, Dir: i.Dir, KeyFingerprint: i.KeyFingerprint,
		Config: i.Config, CreatedAt: i.CreatedAt.UTC(),
	}
}

// Kernel is a kernel as the API shows it (kernel.pull, kernel.import,
// kernel.list, kernel.delete).
type Kernel struct {
	Name    string `json:"name"`
	Release string `json:"release,omitempty"`
	// Format is the kernel file's format ("elf" or "bzImage").
	Format    string    `json:"format,omitempty"`
	Source    string    `json:"source,omitempty"`
	SizeBytes int64     `json:"size_bytes"`
	Dir       string    `json:"dir"`
	PulledAt  time.Time `json:"pulled_at"`
}

// KernelFromModel is the wire form of a pulled kernel.
func KernelFromModel(k model.Kernel) Kernel {
	return Kernel{Name: k.Name, Release: k.Release, Format: k.Format, Source: k.Source,
		SizeBytes: k.SizeBytes, Dir: k.Dir, PulledAt: k.PulledAt.UTC()}
}

// SSHKeyRotateResult is the outcome of sshkey.rotate.
type SSHKeyRotateResult struct {
	// Fingerprint is the new key's SHA256 fingerprint.
	Fingerprint     string `json:"fingerprint"`
	ImagesRefreshed int    `json:"images_refreshed"`
	// ImagesFailed are images whose work seed still has the old key; the
	// next create from each retries.
	ImagesFailed []string `json:"images_failed"`
	// VMsFailed are running VMs the new key could not be pushed to; they
	// get it at their next start.
	VMsFailed []string `json:"vms_failed"`
}

// DNSResult is the outcome of dns.setup and dns.teardown.
type DNSResult struct {
	Bridge string `json:"bridge"`
	DNS    string `json:"dns"`
	Domain string `json:"domain"`
}

// VMStatsParams are the params of vm.stats: the VMs by name or id; none:
// every running or paused VM of the caller.
type VMStatsParams struct {
	Names []string `json:"names,omitempty"`
}

// VMStats is one VM's resource use as the host sees it (vm.stats).
type VMStats struct {
	ID    string        `json:"id"`
	Name  string        `json:"name"`
	State model.VMState `json:"state"`
	Time  string        `json:"time"` // RFC 3339, UTC: when it was read
	// CPUPercent is the VMM process's CPU (every thread, user + system)
	// over the interval since the daemon's previous reading, in percent
	// of one host CPU (so up to 100 × vCPUs); CPUSeconds is its total.
	CPUPercent float64 `json:"cpu_percent"`
	CPUSeconds float64 `json:"cpu_seconds"`
	// MemRSSBytes is the VMM's resident memory (guest RAM it touched plus
	// its own); MemLimitBytes the guest's memory size. GuestMemUsedBytes
	// is MemTotal − MemAvailable from the guest's /proc/meminfo, absent
	// when the guest did not answer in time.
	MemRSSBytes       int64 `json:"mem_rss_bytes"`
	MemLimitBytes     int64 `json:"mem_limit_bytes"`
	GuestMemUsedBytes int64 `json:"guest_mem_used_bytes,omitempty"`
	// Disk bytes allocated on the host (sparse files: what they use, not
	// their size): the system overlay and the work disk.
	DiskOverlayBytes int64 `json:"disk_overlay_bytes"`
	DiskWorkBytes    int64 `json:"disk_work_bytes"`
	// Network bytes from the guest's side of its tap: Rx is what the
	// guest received (the tap's transmit counter), Tx what it sent.
	NetRxBytes uint64 `json:"net_rx_bytes"`
	NetTxBytes uint64 `json:"net_tx_bytes"`
}
