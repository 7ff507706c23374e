package daemon

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"banger/api"
	"banger/internal/model"
	"banger/internal/vmm/vmmtest"
)

// TestWarmStart on the test double: the first --warm create of a shape
// boots cold and fills its slot at agent-ready, the next restores it (its
// own host key, env applied after), another shape and --cold boot cold, a
// failed warm create leaves nothing pinned, a rotated key makes the slot
// stale (replaced by the next boot), a double without snapshots boots
// cold and --warm there is refused.
func TestWarmStart(t *testing.T) {
	pid1Probe = "echo 1" // the double's sessions run on the host
	t.Cleanup(func() { pid1Probe = "echo $PPID" })
	tdrv := vmmtest.New()
	l := newLifecycle(t, tdrv, tdrv, nil)
	create := func(name string, p api.VMCreateParams) (api.VM, error) {
		var vm api.VM
		p.Name, p.SystemOverlaySize, p.WorkDiskSize = name, "16M", "128M"
		err := l.call(api.MethodVMCreate, p, &vm)
		return vm, err
	}
	slots := func() []string {
		ents, _ := os.ReadDir(l.d.vms.warmDir())
		var out []string
		for _, e := range ents {
			out = append(out, e.Name())
		}
		return out
	}
	manifest := func(slot string) model.Snapshot {
		sn, err := readSnapshot(filepath.Join(l.d.vms.warmDir(), slot))
		if err != nil {
			t.Fatal(err)
		}
		return sn
	}

	l.failStartAt("")
	w1, err := create("w1", api.VMCreateParams{Warm: true})
	if err != nil || w1.Start != model.StartCold {
		t.Fatalf("first warm-capable create: %+v %v", w1, err)
	}
	if s := l.stepsSeen(); !slices.Contains(s, "warm_snapshot") || slices.Contains(s, "identity") {
		t.Fatalf("steps of the shape's first create: %v", s)
	}
	sl := slots()
	if len(sl) != 1 {
		t.Fatalf("slots: %v", sl)
	}
	first := manifest(sl[0])
	if first.Warm == "" || first.Spec.Env != nil || first.SourceID != "" {
		t.Fatalf("warm manifest: %+v", first)
	}

	l.failStartAt("")
	w2, err := create("w2", api.VMCreateParams{Warm: true, Env: []string{"WARM=2"}})
	if err != nil || w2.Start != model.StartWarm {
		t.Fatalf("second create of the shape: %+v %v", w2, err)
	}
	if s := l.stepsSeen(); !slices.Contains(s, "identity") || slices.Contains(s, "warm_snapshot") || !slices.Contains(s, "guest_setup") {
		t.Fatalf("steps of a warm create: %v", s)
	}
	l.mustExec("w2")
	k1, _ := os.ReadFile(filepath.Join(w1.Dir, knownHostsName))
	k2, _ := os.ReadFile(filepath.Join(w2.Dir, knownHostsName))
	if hostKeyOf(string(k1)) == hostKeyOf(string(k2)) {
		t.Fatal("the warm VM kept the template's host key")
	}
	if !slices.Equal(w2.Env, []string{"WARM=2"}) {
		t.Fatalf("warm VM's env: %v", w2.Env)
	}
	var doc api.DoctorResult
	if err := l.call(api.MethodDoctor, nil, &doc); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range doc.Checks {
		found = found || c.Name == "warm-start" && strings.Contains(c.Detail, "1 boot snapshot(s)")
	}
	if !found {
		t.Errorf("doctor: %+v", doc.Checks)
	}

	// Another shape, --cold, --warm --cold.
	if vm, err := create("w3", api.VMCreateParams{Warm: true, MemoryMiB: 320}); err != nil || vm.Start != model.StartCold {
		t.Fatalf("another memory size: %+v %v", vm, err)
	}
	if len(slots()) != 2 {
		t.Fatalf("slots after a second shape: %v", slots())
	}
	if vm, err := create("w4", api.VMCreateParams{Cold: true}); err != nil || vm.Start != model.StartCold {
		t.Fatalf("--cold: %+v %v", vm, err)
	}
	if _, err := create("w5", api.VMCreateParams{Warm: true, Cold: true}); !api.IsKind(err, api.KindInvalidArgument) {
		t.Fatalf("--warm --cold: %v", err)
	}
	if _, err := create("w5", api.VMCreateParams{Warm: true, From: "x"}); !api.IsKind(err, api.KindInvalidArgument) {
		t.Fatalf("--warm --from: %v", err)
	}

	// A warm create that fails after the restore leaves no VM and no pin.
	l.failStartAt("identity")
	if _, err := create("w6", api.VMCreateParams{Warm: true}); err == nil {
		t.Fatal("the injected failure did not fail the create")
	}
	l.failStartAt("")
	if n := len(l.d.vms.snapInUse); n != 0 {
		t.Fatalf("pins left after a failed warm create: %v", l.d.vms.snapInUse)
	}
	if vm, err := create("w7", api.VMCreateParams{Warm: true}); err != nil || vm.Start != model.StartWarm {
		t.Fatalf("warm create after a failed one: %+v %v", vm, err)
	}

	// A new daemon key: the slot is stale, the next create boots and
	// replaces it.
	if err := l.call(api.MethodSSHKeyRotate, nil, nil); err != nil {
		t.Fatal(err)
	}
	if vm, err := create("w8", api.VMCreateParams{Warm: true}); err != nil || vm.Start != model.StartCold {
		t.Fatalf("after a key rotation: %+v %v", vm, err)
	}
	if now := manifest(first.ID); now.Warm == first.Warm || !strings.Contains(changedInputs(first.Warm, now.Warm), "daemon_key") {
		t.Fatalf("slot after a key rotation: %q (was %q)", now.Warm, first.Warm)
	}
	if vm, err := create("w9", api.VMCreateParams{Warm: true}); err != nil || vm.Start != model.StartWarm {
		t.Fatalf("after the new slot: %+v %v", vm, err)
	}
	for _, e := range mustReadDir(t, l.d.vms.warmDir()) {
		if strings.HasPrefix(e, ".") {
			t.Errorf("left in warm/: %s", e)
		}
	}
}

// TestWarmNeedsCapability: without snapshots --warm is refused, and
// warm_start boots cold.
func TestWarmNeedsCapability(t *testing.T) {
	tdrv := vmmtest.New()
	tdrv.Caps.Snapshots = false
	tdrv.Caps.NoSnapshots = "no snapshots in this test"
	l := newLifecycle(t, tdrv, tdrv, func(c *Config) { c.WarmStart = true })
	var vm api.VM
	err := l.call(api.MethodVMCreate, api.VMCreateParams{Name: "n1", Warm: true, SystemOverlaySize: "16M", WorkDiskSize: "128M"}, &vm)
	if !api.IsKind(err, api.KindUnavailable) || !strings.Contains(err.Error(), "no snapshots in this test") {
		t.Fatalf("--warm without snapshots: %v", err)
	}
	if err := l.call(api.MethodVMCreate, api.VMCreateParams{Name: "n2", SystemOverlaySize: "16M", WorkDiskSize: "128M"}, &vm); err != nil || vm.Start != model.StartCold {
		t.Fatalf("warm_start without snapshots: %+v %v", vm, err)
	}
}

func mustReadDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}
