package daemon

import (
	"context"

	"banger/internal/api"
	"banger/internal/model"
)

// resolveImage turns the requested image name into a local image, pulling
// it if needed. Until images land it records the name as given.
func (s *VMService) resolveImage(ctx context.Context, op *operation, spec *model.VMSpec) error {
	return nil
}

// startLocked boots the VM. Placeholder until the VMM drivers land.
func (s *VMService) startLocked(ctx context.Context, op *operation, rec model.VMRecord) (model.VMRecord, error) {
	return rec, api.Errorf(api.KindUnavailable, "booting VMs is not available in this build yet: use --no-start")
}

func (s *VMService) stopLocked(ctx context.Context, op *operation, rec model.VMRecord, force bool) (model.VMRecord, error) {
	rec.State = model.StateStopped
	return rec, s.d.store.UpdateVM(ctx, rec)
}

func parsePorts(specs []string) ([]model.PortForward, error) {
	if len(specs) > 0 {
		return nil, api.Errorf(api.KindInvalidArgument, "port forwards are not available in this build yet")
	}
	return nil, nil
}
