package model

// Provisioning limits: the contents travel in one vm.create request (a
// request line is at most 1 MiB, base64 adds a third), and are kept in
// the VM's directory until the first boot.
const (
	MaxProvisionScripts = 16
	MaxProvisionBytes   = 640 << 10 // scripts and copied files together
)

// Provision states (VMRuntime.ProvisionState).
const (
	ProvisionPending = "pending" // never stored: no state yet
	ProvisionRunning = "running" // began; never re-run, even after a crash
	ProvisionDone    = "done"
	ProvisionFailed  = "failed"
)

// ProvisionSpec is a VM's first-boot provisioning: its files live in
// <vm dir>/provision/ (the scripts under these names, in order, and
// copy.tar when Copy).
type ProvisionSpec struct {
	Scripts []string `json:"scripts,omitempty"`
	Copy    bool     `json:"copy,omitempty"`
}

// ProvisionState is "" for a VM without provisioning, else its state.
func (v VMRecord) ProvisionState() string {
	if v.Spec.Provision == nil {
		return ""
	}
	if v.Runtime.ProvisionState == "" {
		return ProvisionPending
	}
	return v.Runtime.ProvisionState
}
