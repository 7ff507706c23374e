package daemon

import (
	"context"
	"errors"

	"banger/internal/api"
	"banger/internal/store"
)

// errKind maps errors from any layer to a wire kind.
func errKind(err error) api.Kind {
	var ae *api.Error
	switch {
	case errors.As(err, &ae):
		return ae.Kind
	case errors.Is(err, store.ErrNotFound):
		return api.KindNotFound
	case errors.Is(err, store.ErrConflict):
		return api.KindAlreadyExists
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return api.KindUnavailable
	}
	return api.KindInternal
}
