package catalog

import (
	"fmt"
	"strings"
	"testing"
)

type e struct{ N, V string }

func (x e) EntryName() string { return x.N }

func TestMergeLookupNames(t *testing.T) {
	base := []e{{"b", "1"}, {"a", "1"}}
	over := []e{{"a", "2"}, {"c", "2"}}
	m := Merge(base, over)
	if fmt.Sprint(m) != "[{b 1} {a 2} {c 2}]" {
		t.Fatalf("merge: %v", m)
	}
	if base[1].V != "1" {
		t.Fatal("merge changed its input")
	}
	if got, ok := Lookup(m, "a"); !ok || got.V != "2" {
		t.Fatalf("lookup: %v %v", got, ok)
	}
	if _, ok := Lookup(m, "A"); ok {
		t.Fatal("lookup is not exact")
	}
	if fmt.Sprint(Names(m)) != "[a b c]" {
		t.Fatalf("names: %v", Names(m))
	}
}

func TestCheckAndDecode(t *testing.T) {
	ok := func(e) error { return nil }
	if err := Check([]e{{"a", ""}, {"a", ""}}, "kernel", ok); err == nil || !strings.Contains(err.Error(), `duplicate kernel name "a"`) {
		t.Fatalf("dup: %v", err)
	}
	var v struct{ Items []e }
	if err := Decode([]byte(`{"Items":[],"extra":1}`), &v, "{items}"); err == nil || !strings.Contains(err.Error(), "extra") {
		t.Fatalf("unknown field: %v", err)
	}
	for _, doc := range []string{`{"Items":[]}{"Items":[]}`, `{"Items":[]} x`, `{"Items":[]}]`} {
		if err := Decode([]byte(doc), &v, "{items}"); err == nil || !strings.Contains(err.Error(), "data after the document") {
			t.Errorf("%s: %v", doc, err)
		}
	}
	if err := Decode([]byte("{\"Items\":[]}\n \t\r\n"), &v, "{items}"); err != nil {
		t.Errorf("trailing whitespace: %v", err)
	}
}

func TestValidateName(t *testing.T) {
	for _, good := range []string{"a", "firecracker-6.1", "debian_12", strings.Repeat("x", 63)} {
		if err := ValidateName("image", good); err != nil {
			t.Errorf("%q: %v", good, err)
		}
	}
	for _, bad := range []string{"", ".tmp", "a-", "A", "a/b", strings.Repeat("x", 64)} {
		if err := ValidateName("image", bad); err == nil || !strings.Contains(err.Error(), "invalid image name") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
