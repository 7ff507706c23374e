// Package model holds banger's records and the validation every entry point
// shares: the CLI, the RPC layer and the store all call into it, so a value
// that passes here is safe everywhere.
package model

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"time"
)

// VMState is the lifecycle state of a VM record.
type VMState string

const (
	StateCreated  VMState = "created"
	StateStarting VMState = "starting"
	StateRunning  VMState = "running"
	// StatePaused: the VMM runs, its vCPUs are stopped (vm pause); the
	// guest's memory, devices and connections stay as they are.
	StatePaused   VMState = "paused"
	StateStopping VMState = "stopping"
	StateStopped  VMState = "stopped"
	StateError    VMState = "error"
)

// ValidState reports whether s is one of the known states.
func ValidState(s VMState) bool {
	switch s {
	case StateCreated, StateStarting, StateRunning, StatePaused, StateStopping, StateStopped, StateError:
		return true
	}
	return false
}

// Defaults for a VM whose create call leaves a field unset.
const (
	DefaultVCPU              = 1
	DefaultMemoryMiB         = 512
	DefaultSystemOverlaySize = 2 << 30 // 2 GiB, sparse
	DefaultWorkDiskSize      = 4 << 30 // 4 GiB, sparse
	MaxVCPU                  = 64
	MinMemoryMiB             = 64
	MaxMemoryMiB             = 256 << 10
	MinDiskSize              = 16 << 20
	MaxDiskSize              = 2 << 40
)

// PortForward maps a host address and port to a guest port.
type PortForward struct {
	HostIP    string `json:"host_ip"`
	HostPort  int    `json:"host_port"`
	GuestPort int    `json:"guest_port"`
	Protocol  string `json:"protocol"`
}

// VMSpec is what the user asked for; it does not change while the VM lives.
type VMSpec struct {
	Image             string        `json:"image"`
	ImageID           string        `json:"image_id,omitempty"`
	Kernel            string        `json:"kernel,omitempty"`
	VCPU              int           `json:"vcpu"`
	MemoryMiB         int           `json:"memory_mib"`
	SystemOverlaySize int64         `json:"system_overlay_size"`
	WorkDiskSize      int64         `json:"work_disk_size"`
	NAT               bool          `json:"nat"`
	Ports             []PortForward `json:"ports,omitempty"`
	// OwnerUID is the uid that created the VM (SO_PEERCRED); 0 is root.
	// A non-root caller sees and acts on its own VMs only.
	OwnerUID int `json:"owner_uid"`
	// UserKeys are the OpenSSH public keys of the owner's CLI, authorized
	// in the guest (over the agent) the first time each is used.
	UserKeys []string `json:"user_keys,omitempty"`
	// Labels are the caller's tags (ValidateLabels).
	Labels map[string]string `json:"labels,omitempty"`
	// ExpiresAt (--ttl): the daemon removes the VM after it; zero: never.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	// IdleStop (--idle-stop): the daemon stops the running VM after this
	// long without exec/ssh/proxy/port-forward traffic and without guest
	// CPU (daemon/idle.go); zero: never.
	IdleStop time.Duration `json:"idle_stop,omitempty"`
	// Init is the init mode asked for (guestproto: auto, banger, image);
	// "" is auto.
	Init string `json:"init,omitempty"`
	// Env (KEY=VALUE) is the image's Env plus the create's -e: the
	// environment of the main process and of every exec.
	Env []string `json:"env,omitempty"`
	// Main is the VM's main process (nil: none), decided at create.
	Main *MainProcess `json:"main,omitempty"`
	// Provision is the first-boot provisioning, if any.
	Provision *ProvisionSpec `json:"provision,omitempty"`
	// Shares are the host directories the guest mounts (-v), in order:
	// the i-th has tag ShareTag(i). Part of the spec's JSON column, so
	// the store needs no migration.
	Shares []Share `json:"shares,omitempty"`
}

// MainProcess is the command a VM runs as its service: the image's
// Entrypoint+Cmd or the create's overrides (see docs/architecture.md for
// when an image gets one).
type MainProcess struct {
	Argv       []string `json:"argv"`
	WorkingDir string   `json:"working_dir,omitempty"`
	User       string   `json:"user,omitempty"`
	Restart    string   `json:"restart,omitempty"` // no, on-failure, always
	// Attached: `vm run` runs it in the foreground itself; banger-init
	// does not start it.
	Attached bool `json:"attached,omitempty"`
}

// VMRuntime is what the daemon allocated and observed for the VM.
type VMRuntime struct {
	GuestIP   string    `json:"guest_ip"`
	MAC       string    `json:"mac,omitempty"`
	Tap       string    `json:"tap,omitempty"`
	CID       uint32    `json:"cid,omitempty"`
	VMM       string    `json:"vmm,omitempty"`
	PID       int       `json:"pid,omitempty"`
	Dir       string    `json:"dir,omitempty"`
	StartedAt time.Time `json:"started_at,omitempty"`
	LastError string    `json:"last_error,omitempty"`
	// Init is what the last boot ran as (banger or image), as the guest
	// reported it; InitPath is what its /sbin/init resolved to.
	Init     string `json:"init,omitempty"`
	InitPath string `json:"init_path,omitempty"`
	// MainExit is the main process's final exit status when it stopped the
	// VM (nil: it did not, or the VM has no main process).
	MainExit *int `json:"main_exit,omitempty"`
	// VMMState is the driver's vmm.StateInfo (JSON), kept so a restarted
	// daemon can re-adopt the VMM process.
	VMMState json.RawMessage `json:"vmm_state,omitempty"`
	// ProvisionState is "" until the first boot's provisioning begins,
	// then ProvisionRunning, ProvisionDone or ProvisionFailed: it never
	// runs twice.
	ProvisionState string    `json:"provision_state,omitempty"`
	ProvisionedAt  time.Time `json:"provisioned_at,omitempty"`
	// Start is how the last start got the guest running: StartCold (a
	// boot), StartWarm (restored from the daemon's boot snapshot of its
	// shape) or StartSnapshot (create --from, fork).
	Start string `json:"start,omitempty"`
	// ShareTransport is how the last start served Spec.Shares
	// (virtiofs or 9p); "" before a start or without shares.
	ShareTransport string `json:"share_transport,omitempty"`
	// Balloon: the last start gave the guest a free page reporting
	// balloon (part of its device layout, which a snapshot records).
	Balloon bool `json:"balloon,omitempty"`
}

// VMRuntime.Start values.
const (
	StartCold     = "cold"
	StartWarm     = "warm"
	StartSnapshot = "snapshot"
)

// VMRecord is one row of the vms table.
type VMRecord struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	State     VMState   `json:"state"`
	Spec      VMSpec    `json:"spec"`
	Runtime   VMRuntime `json:"runtime"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// DNSName is the name vmdns answers for this VM.
func (v VMRecord) DNSName() string { return v.Name + ".vm" }

// ImageConfig is the part of an OCI image config that `vm run` uses.
type ImageConfig struct {
	Env        []string `json:"env,omitempty"`
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	WorkingDir string   `json:"working_dir,omitempty"`
	User       string   `json:"user,omitempty"`
}

// Image is a pulled or imported image: a read-only rootfs plus a work seed.
type Image struct {
	ID             string      `json:"id"`
	Name           string      `json:"name"`
	Source         string      `json:"source"`
	Digest         string      `json:"digest,omitempty"`
	Kernel         string      `json:"kernel,omitempty"`
	SizeBytes      int64       `json:"size_bytes"`
	Dir            string      `json:"dir"`
	KeyFingerprint string      `json:"key_fingerprint,omitempty"`
	Config         ImageConfig `json:"config"`
	// Init is the image's default init mode (the catalog's "init"); ""
	// is auto.
	Init      string    `json:"init,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// Kernel is a pulled or imported kernel.
type Kernel struct {
	Name      string    `json:"name"`
	Release   string    `json:"release,omitempty"`
	Format    string    `json:"format,omitempty"`
	Source    string    `json:"source,omitempty"`
	SizeBytes int64     `json:"size_bytes"`
	Dir       string    `json:"dir"`
	PulledAt  time.Time `json:"pulled_at"`
}

// NewID returns a random 16-byte identifier in hex (32 characters).
func NewID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return hex.EncodeToString(b[:])
}

// Snapshot is a saved VM: its memory and device state plus copies of its
// overlay and work disk, at one moment. It lives in its own directory
// (state/snapshots/<id>) whose manifest.json is this record.
type Snapshot struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// SourceID and SourceName are the VM it was taken of.
	SourceID   string `json:"source_id"`
	SourceName string `json:"source_name"`
	// Spec is the source's: a VM restored from the snapshot is that
	// machine (image, kernel, vCPUs, memory, disks, env, main process).
	Spec VMSpec `json:"spec"`
	// VMM is the driver whose state format state.bin is in, Agent the
	// agent transport, Network whether the VM had a NIC, KernelRelease
	// the running kernel: a restore needs the same device layout.
	VMM           string `json:"vmm"`
	Agent         string `json:"agent"`
	Network       bool   `json:"network"`
	KernelRelease string `json:"kernel_release,omitempty"`
	// Balloon: the source had a free page reporting balloon (device
	// layout); a restore adds one exactly when it did.
	Balloon bool `json:"balloon,omitempty"`
	// Init and InitPath are what the source's boot ran as.
	Init     string `json:"init,omitempty"`
	InitPath string `json:"init_path,omitempty"`
	// StateBytes is the size of the memory and device state; DiskBytes the
	// space the disk copies take (allocated, not apparent).
	StateBytes int64 `json:"state_bytes"`
	DiskBytes  int64 `json:"disk_bytes"`
	// Paused is how long the source was paused for it.
	Paused    time.Duration `json:"paused_ns"`
	CreatedAt time.Time     `json:"created_at"`
	// Warm, for a warm-start boot snapshot (state/warm/), is what it was
	// made from beyond its shape (image digest, kernel, banger-init
	// build, daemon key, VMM): it is stale when any of them changes.
	Warm string `json:"warm,omitempty"`
	// Dir is where it lives (filled in when read, not stored).
	Dir string `json:"-"`
}
