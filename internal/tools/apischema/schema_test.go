package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"banger/internal/daemon"
)

func root(t *testing.T) string {
	t.Helper()
	r, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestReferenceIsCurrent regenerates docs/api.schema.json and the
// generated part of docs/api.md and fails if the committed ones differ.
func TestReferenceIsCurrent(t *testing.T) {
	if err := run(root(t), false); err != nil {
		t.Fatal(err)
	}
}

// TestEveryMethodDocumented: each method the daemon serves has a
// hand-written "### method" section in docs/api.md (above the generated
// reference) and an entry in the schema.
func TestEveryMethodDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(root(t), "docs", "api.md"))
	if err != nil {
		t.Fatal(err)
	}
	if i := bytes.Index(doc, []byte(mdBegin)); i >= 0 {
		doc = doc[:i]
	}
	sj, _, err := generate(root(t))
	if err != nil {
		t.Fatal(err)
	}
	var sc struct {
		Methods map[string]json.RawMessage `json:"methods"`
	}
	if err := json.Unmarshal(sj, &sc); err != nil {
		t.Fatal(err)
	}
	methods := daemon.Methods()
	for _, m := range methods {
		if !regexp.MustCompile(`(?m)^### ` + regexp.QuoteMeta(m.Name) + `$`).Match(doc) {
			t.Errorf("docs/api.md has no section \"### %s\": write one (params, result, what it does)", m.Name)
		}
		if _, ok := sc.Methods[m.Name]; !ok {
			t.Errorf("schema lacks %s", m.Name)
		}
	}
	if len(sc.Methods) != len(methods) {
		t.Errorf("schema has %d methods, the daemon %d", len(sc.Methods), len(methods))
	}
}

// TestSchemaShapes spot-checks the reflection against fields it must
// find: omitempty fields optional, others required, []byte base64,
// nested types referenced.
func TestSchemaShapes(t *testing.T) {
	sj, _, err := generate(root(t))
	if err != nil {
		t.Fatal(err)
	}
	var sc schema
	if err := json.Unmarshal(sj, &sc); err != nil {
		t.Fatal(err)
	}
	stop := sc.Defs["VMStopParams"]
	if stop == nil || len(stop.Required) != 1 || stop.Required[0] != "name" {
		t.Errorf("VMStopParams: %+v, want exactly name required", stop)
	}
	create := sc.Defs["VMCreateParams"]
	if create == nil || len(create.Required) != 0 || create.Properties["copy_tar"].ContentEncoding != "base64" {
		t.Fatalf("VMCreateParams: %+v", create)
	}
	if r := create.Properties["provision"].Items; r == nil || r.Ref != "#/$defs/ProvisionScript" {
		t.Errorf("VMCreateParams.provision items: %+v", r)
	}
	if create.Properties["ttl"].Description == "" {
		t.Errorf("VMCreateParams.ttl has no description from its doc comment")
	}
	if m := sc.Methods["vm.create"]; m.Go != "Client.CreateVM" || m.Result.Ref != "#/$defs/VM" {
		t.Errorf("vm.create: %+v", m)
	}
	if m := sc.Methods["daemon.events"]; m.Stream == "" || m.StreamItem == nil || m.Result != nil {
		t.Errorf("daemon.events: %+v", m)
	}
}
