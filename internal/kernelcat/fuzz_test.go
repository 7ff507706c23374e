package kernelcat

import (
	"encoding/json"
	"reflect"
	"testing"
)

// FuzzParse: a --kernel-catalog file is the user's, a downloaded one is
// not trusted. Accepted: one JSON document whose entries each pass
// ValidateEntry under unique names, and which survives a round trip.
func FuzzParse(f *testing.F) {
	f.Add(embeddedCatalog)
	for _, s := range []string{
		`{"kernels":[]}`, `{}`, `null`, `{"kernels":null}`,
		`{"kernels":[{"name":"k","source":{"type":"deb","package":"linux-image-amd64"}}]}`,
		`{"kernels":[{"name":"k","source":{"type":"url","url":"file:///k","sha256":"` + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" + `"}}]}`,
		`{"kernels":[{"name":"k","source":{"type":"url","url":"http://h/k"}},{"name":"k","source":{"type":"url","url":"https://h/k"}}]}`,
		`{"kernels":[{"name":".tmp","source":{"type":"deb","package":"x"}}]}`,
		`{"kernels":[{"name":"k","source":{"type":"url","url":"ftp://h/k"}}]}`,
		`{"kernels":[{"name":"k","extra":1,"source":{"type":"deb","package":"ab"}}]}`,
		`{"kernels":[]}{"kernels":[{"name":"Bad"}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := parse(data)
		if err != nil {
			return
		}
		if !json.Valid(data) {
			t.Fatalf("parse accepted %.200q, which is not one JSON document", data)
		}
		seen := map[string]bool{}
		for _, e := range c.Kernels {
			if err := ValidateEntry(e); err != nil {
				t.Fatalf("accepted entry %+v: %v", e, err)
			}
			if seen[e.Name] {
				t.Fatalf("accepted %q twice", e.Name)
			}
			seen[e.Name] = true
			if got, ok := c.Lookup(e.Name); !ok || got != e {
				t.Fatalf("lookup %q: %+v %v", e.Name, got, ok)
			}
		}
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		c2, err := parse(b)
		if err != nil || len(c.Kernels)+len(c2.Kernels) > 0 && !reflect.DeepEqual(c, c2) {
			t.Fatalf("round trip of %.200q: %s: %+v, %v", data, b, c2, err)
		}
	})
}
