package main

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

func TestEnsureMachineID(t *testing.T) {
	root := t.TempDir()
	upper := filepath.Join(t.TempDir(), "upper")
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.MkdirAll(filepath.Join(upper, "etc"), 0o755)
	read := func() string {
		b, err := os.ReadFile(filepath.Join(root, machineIDPath))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	valid := regexp.MustCompile(`^[0-9a-f]{32}\n$`)
	// None at all: generated.
	if err := ensureMachineID(root, upper); err != nil {
		t.Fatal(err)
	}
	first := read()
	if !valid.MatchString(first) {
		t.Fatalf("machine-id %q", first)
	}
	// Inherited from the image (not in upper): replaced, never shared.
	if err := ensureMachineID(root, upper); err != nil {
		t.Fatal(err)
	}
	if second := read(); second == first || !valid.MatchString(second) {
		t.Fatalf("an image's machine-id %q was kept (now %q)", first, second)
	}
	// The VM's own (in upper): kept across boots.
	own := "0123456789abcdef0123456789abcdef\n"
	os.WriteFile(filepath.Join(upper, machineIDPath), []byte(own), 0o444)
	os.WriteFile(filepath.Join(root, machineIDPath), []byte(own), 0o444)
	if err := ensureMachineID(root, upper); err != nil {
		t.Fatal(err)
	}
	if got := read(); got != own {
		t.Fatalf("the VM's own machine-id was replaced: %q", got)
	}
	// Empty or systemd's "uninitialized" in upper: generated.
	for _, bad := range []string{"", "uninitialized\n", "00000000000000000000000000000000\n"} {
		os.WriteFile(filepath.Join(upper, machineIDPath), []byte(bad), 0o444)
		if err := ensureMachineID(root, upper); err != nil {
			t.Fatal(err)
		}
		if got := read(); !valid.MatchString(got) || got == own {
			t.Fatalf("upper %q: machine-id %q", bad, got)
		}
	}
}

func TestEnsureStickyDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tmp")
	os.Mkdir(dir, 0o755)
	if err := ensureStickyDir(dir); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(dir)
	if err != nil || st.Mode() != os.ModeDir|os.ModeSticky|0o777 {
		t.Fatalf("mode %v, %v", st.Mode(), err)
	}
}
