package kernelcat

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestEmbeddedCatalog(t *testing.T) {
	c, err := LoadEmbedded()
	if err != nil {
		t.Fatal(err)
	}
	def, ok := c.Lookup(DefaultKernel)
	if !ok {
		t.Fatalf("default kernel %q missing; have %v", DefaultKernel, c.Names())
	}
	if def.Source.Type != SourceDeb || def.Source.Package != "linux-image-cloud-amd64" {
		t.Fatalf("default kernel source = %+v", def.Source)
	}
	fc := 0
	for _, e := range c.Kernels {
		if e.Source.Type != SourceURL {
			continue
		}
		fc++
		if !strings.Contains(e.Description, "for KVM hosts; unverified here (no network)") {
			t.Errorf("%s: description must say it is unverified here: %q", e.Name, e.Description)
		}
		if e.Source.SHA256 == "" {
			t.Errorf("%s: remote url entry without sha256 would be refused by Fetch", e.Name)
		}
	}
	if fc == 0 {
		t.Fatal("no Firecracker url entries")
	}
}

func writeCatalog(t *testing.T, body string) string {
	p := filepath.Join(t.TempDir(), "kernels.json")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadFileRejects(t *testing.T) {
	sha := strings.Repeat("a", 64)
	cases := []struct{ name, body, want string }{
		{"bad name", `{"kernels":[{"name":"Bad Name","source":{"type":"deb","package":"linux-image-amd64"}}]}`, `"Bad Name"`},
		{"dot name", `{"kernels":[{"name":".tmp-x","source":{"type":"deb","package":"linux-image-amd64"}}]}`, `".tmp-x"`},
		{"unknown type", `{"kernels":[{"name":"k","source":{"type":"ftp"}}]}`, `"ftp"`},
		{"deb without package", `{"kernels":[{"name":"k","source":{"type":"deb"}}]}`, `got ""`},
		{"deb option injection", `{"kernels":[{"name":"k","source":{"type":"deb","package":"-oDebug=1"}}]}`, `"-oDebug=1"`},
		{"url scheme", `{"kernels":[{"name":"k","source":{"type":"url","url":"ftp://h/k","sha256":"` + sha + `"}}]}`, `"ftp://h/k"`},
		{"url missing", `{"kernels":[{"name":"k","source":{"type":"url"}}]}`, `got ""`},
		{"bad sha", `{"kernels":[{"name":"k","source":{"type":"url","url":"http://127.0.0.1/k","sha256":"XYZ"}}]}`, `"XYZ"`},
		{"duplicate", `{"kernels":[{"name":"k","source":{"type":"deb","package":"aa"}},{"name":"k","source":{"type":"deb","package":"bb"}}]}`, `duplicate kernel name "k"`},
		{"unknown field", `{"kernels":[{"name":"k","source":{"type":"deb","package":"ab","mirror":"x"}}]}`, `"mirror"`},
		{"not json", `kernels: []`, `parse JSON`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := LoadFile(writeCatalog(t, c.body))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to contain %s", err, c.want)
			}
		})
	}
	if _, err := LoadFile(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Fatal("missing file accepted")
	}
}

func TestMergeLookupNames(t *testing.T) {
	base, err := LoadEmbedded()
	if err != nil {
		t.Fatal(err)
	}
	before := base.Names()
	over, err := LoadFile(writeCatalog(t, `{"kernels":[
		{"name":"k1","description":"local","source":{"type":"url","url":"http://127.0.0.1:8000/k1.tar.gz","sha256":"`+strings.Repeat("0", 64)+`"}},
		{"name":"`+DefaultKernel+`","source":{"type":"url","url":"file:///srv/k.tar.gz"}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	m := base.Merge(over)
	if got := m.Names(); len(got) != len(before)+1 {
		t.Fatalf("merged names %v, want %d entries", got, len(before)+1)
	}
	if e, _ := m.Lookup(DefaultKernel); e.Source.Type != SourceURL {
		t.Fatalf("override did not replace %s: %+v", DefaultKernel, e)
	}
	if e, ok := m.Lookup("k1"); !ok || e.Description != "local" {
		t.Fatalf("k1 = %+v, %v", e, ok)
	}
	if m.Kernels[0].Name != base.Kernels[0].Name {
		t.Fatal("a replaced entry should keep its position")
	}
	// The inputs are not modified.
	if e, _ := base.Lookup(DefaultKernel); e.Source.Type != SourceDeb || !reflect.DeepEqual(base.Names(), before) {
		t.Fatal("Merge modified its receiver")
	}
	if _, ok := m.Lookup("nope"); ok {
		t.Fatal("Lookup found a missing name")
	}
	names := m.Names()
	for i := 1; i < len(names); i++ {
		if names[i-1] > names[i] {
			t.Fatalf("Names not sorted: %v", names)
		}
	}
}
