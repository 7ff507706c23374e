package daemon

import (
	"strings"

	"banger/api"
	"banger/internal/model"
)

// vmFilter is one parsed `--filter`: all of a list must match.
type vmFilter struct {
	kind, key, value string
	hasValue         bool
}

// parseFilters checks filters (label=KEY[=VALUE], state=, image=, name=).
func parseFilters(fs []string) ([]vmFilter, error) {
	out := make([]vmFilter, 0, len(fs))
	for _, f := range fs {
		kind, rest, ok := strings.Cut(f, "=")
		if !ok || rest == "" {
			return nil, api.Errorf(api.KindInvalidArgument, "filter %q: want label=KEY[=VALUE], state=STATE, image=IMAGE or name=NAME", f)
		}
		vf := vmFilter{kind: kind}
		switch kind {
		case "label":
			vf.key, vf.value, vf.hasValue = strings.Cut(rest, "=")
		case "state", "image", "name":
			vf.value = rest
		default:
			return nil, api.Errorf(api.KindInvalidArgument, "filter %q: unknown filter %q (label, state, image or name)", f, kind)
		}
		out = append(out, vf)
	}
	return out, nil
}

func (f vmFilter) match(r model.VMRecord) bool {
	switch f.kind {
	case "label":
		v, ok := r.Spec.Labels[f.key]
		return ok && (!f.hasValue || v == f.value)
	case "state":
		return string(r.State) == f.value
	case "image":
		return r.Spec.Image == f.value
	case "name":
		return r.Name == f.value
	}
	return false
}

func matchAll(fs []vmFilter, r model.VMRecord) bool {
	for _, f := range fs {
		if !f.match(r) {
			return false
		}
	}
	return true
}

// hasStateFilter: a state filter names the states it wants, running or not.
func hasStateFilter(fs []vmFilter) bool {
	for _, f := range fs {
		if f.kind == "state" {
			return true
		}
	}
	return false
}
