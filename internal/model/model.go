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
	StateStopping VMState = "stopping"
	StateStopped  VMState = "stopped"
	StateError    VMState = "error"
)

// ValidState reports whether s is one of the known states.
func ValidState(s VMState) bool {
	switch s {
	case StateCreated, StateStarting, StateRunning, StateStopping, StateStopped, StateError:
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
	// Provision is the first-boot provisioning, if any.
	Provision *ProvisionSpec `json:"provision,omitempty"`
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
	// VMMState is the driver's vmm.StateInfo (JSON), kept so a restarted
	// daemon can re-adopt the VMM process.
	VMMState json.RawMessage `json:"vmm_state,omitempty"`
	// ProvisionState is "" until the first boot's provisioning begins,
	// then ProvisionRunning, ProvisionDone or ProvisionFailed: it never
	// runs twice.
	ProvisionState string    `json:"provision_state,omitempty"`
	ProvisionedAt  time.Time `json:"provisioned_at,omitempty"`
}

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
	CreatedAt      time.Time   `json:"created_at"`
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
