package daemon

import (
	"banger/api"
	"banger/internal/store"
)

// storeSentinels are the store's errors that mean a kind.
var storeSentinels = []api.Sentinel{
	{Err: store.ErrNotFound, Kind: api.KindNotFound},
	{Err: store.ErrConflict, Kind: api.KindAlreadyExists},
}

// errKind maps errors from any layer to a wire kind: api.Classify (see its
// doc for the precedence) with the store's sentinels as precise causes.
// Layers below keep causes with %w; this is the only place they become a
// kind.
func errKind(err error) api.Kind {
	return api.Classify(err, storeSentinels...)
}
