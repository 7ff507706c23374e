// Package catalog holds what banger's two embedded catalogs (kernelcat,
// imagecat) share: the name rule, strict JSON decoding, duplicate checks,
// and merge/lookup over entries. Each catalog keeps its own schema and
// source validation.
package catalog

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
)

// Named is a catalog entry.
type Named interface{ EntryName() string }

// ValidateName checks a catalog entry name: lowercase letters, digits,
// '-', '.' and '_', at most 63, starting and ending with a letter or digit
// (names beginning with '.' are banger's temp dirs; '.' and '_' allow
// versions like "firecracker-6.1"). kind ("kernel", "image") goes into the
// error.
func ValidateName(kind, name string) error {
	if name == "" {
		return fmt.Errorf("invalid %s name %q: must not be empty", kind, name)
	}
	if len(name) > 63 {
		return fmt.Errorf("invalid %s name %q: longer than 63 characters", kind, name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(isAlnum(c) || c == '-' || c == '.' || c == '_') {
			return fmt.Errorf("invalid %s name %q: only lowercase letters, digits, '-', '.' and '_' are allowed (found %q)", kind, name, string(rune(c)))
		}
	}
	if !isAlnum(name[0]) || !isAlnum(name[len(name)-1]) {
		return fmt.Errorf("invalid %s name %q: must start and end with a letter or digit", kind, name)
	}
	return nil
}

func isAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

// Decode strictly unmarshals a catalog document into v (unknown fields are
// errors, so a typo is not silently ignored, and so is anything after the
// document: a second document would be); shape describes the expected
// document in the error.
func Decode(data []byte, v any, shape string) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("parse JSON (want %s): %w", shape, err)
	}
	if rest := bytes.TrimLeft(data[dec.InputOffset():], " \t\r\n"); len(rest) > 0 {
		return fmt.Errorf("parse JSON (want %s): data after the document at byte %d", shape, len(data)-len(rest))
	}
	return nil
}

// Check validates every entry and refuses duplicate names.
func Check[E Named](es []E, kind string, validate func(E) error) error {
	seen := map[string]bool{}
	for i, e := range es {
		if err := validate(e); err != nil {
			return fmt.Errorf("entry %d: %w", i, err)
		}
		if seen[e.EntryName()] {
			return fmt.Errorf("entry %d: duplicate %s name %q", i, kind, e.EntryName())
		}
		seen[e.EntryName()] = true
	}
	return nil
}

// Merge returns base's entries with over's added; an entry of over replaces
// base's entry of the same name in place. Neither input changes.
func Merge[E Named](base, over []E) []E {
	out := make([]E, 0, len(base)+len(over))
	idx := map[string]int{}
	for _, list := range [][]E{base, over} {
		for _, e := range list {
			if i, ok := idx[e.EntryName()]; ok {
				out[i] = e
				continue
			}
			idx[e.EntryName()] = len(out)
			out = append(out, e)
		}
	}
	return out
}

// Lookup finds an entry by exact name.
func Lookup[E Named](es []E, name string) (E, bool) {
	for _, e := range es {
		if e.EntryName() == name {
			return e, true
		}
	}
	var zero E
	return zero, false
}

// Names lists entry names, sorted, for "unknown X; available: …" errors.
func Names[E Named](es []E) []string {
	names := make([]string, 0, len(es))
	for _, e := range es {
		names = append(names, e.EntryName())
	}
	sort.Strings(names)
	return names
}
