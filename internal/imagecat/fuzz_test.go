package imagecat

import (
	"encoding/json"
	"reflect"
	"testing"
)

// FuzzParse: an --image-catalog file is the user's, a downloaded one is
// not trusted. Accepted: one JSON document whose entries each pass
// ValidateEntry under unique names, and which survives a round trip.
func FuzzParse(f *testing.F) {
	f.Add(embeddedCatalog)
	for _, s := range []string{
		`{"images":[]}`, `{}`, `null`, `{"images":null}`,
		`{"images":[{"name":"a","source":{"type":"oci","ref":"127.0.0.1:5000/busybox:1"}}]}`,
		`{"images":[{"name":"a","kernel":"k-6.1","init":"image","source":{"type":"debootstrap","suite":"bookworm","variant":"minbase","packages":["kmod"],"mirror":"http://deb.debian.org/debian"}}]}`,
		`{"images":[{"name":"a","source":{"type":"bundle","url":"file:///b.tar","sha256":"` + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" + `"}}]}`,
		`{"images":[{"name":"a","source":{"type":"oci","ref":"UPPER/case"}}]}`,
		`{"images":[{"name":"a","source":{"type":"oci","ref":"x@sha256:00"}}]}`,
		`{"images":[{"name":"a","init":"systemd","source":{"type":"oci","ref":"x"}}]}`,
		`{"images":[{"name":"a","source":{"type":"debootstrap","suite":"bookworm","packages":[]}}]}`,
		`{"images":[]} trailing`,
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
		for _, e := range c.Images {
			if err := ValidateEntry(e); err != nil {
				t.Fatalf("accepted entry %+v: %v", e, err)
			}
			if seen[e.Name] {
				t.Fatalf("accepted %q twice", e.Name)
			}
			seen[e.Name] = true
			if got, ok := c.Lookup(e.Name); !ok || !reflect.DeepEqual(got, e) {
				t.Fatalf("lookup %q: %+v %v", e.Name, got, ok)
			}
		}
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		c2, err := parse(b)
		if err != nil || !reflect.DeepEqual(norm(c), norm(c2)) {
			t.Fatalf("round trip of %.200q: %s: %+v, %v", data, b, c2, err)
		}
	})
}

// norm drops the difference between empty and absent lists, which
// omitempty does not keep.
func norm(c *Catalog) *Catalog {
	if c == nil {
		return nil
	}
	out := &Catalog{}
	for _, e := range c.Images {
		if len(e.Source.Packages) == 0 {
			e.Source.Packages = nil
		}
		out.Images = append(out.Images, e)
	}
	return out
}
