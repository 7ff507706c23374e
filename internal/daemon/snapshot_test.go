package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/api"
	"banger/internal/model"
	"banger/internal/vmm/vmmtest"
)

// TestSnapshotRestoreFork: snapshot, create --from, fork and their
// bookkeeping on the test double (whose saved state is its host key):
// a restored VM answers with a host key of its own (the identity step),
// its source runs on, snapshots outlive their VM unless --with-snapshots,
// and nothing half-written is ever listed.
func TestSnapshotRestoreFork(t *testing.T) {
	tdrv := vmmtest.New()
	l := newLifecycle(t, tdrv, tdrv, nil)
	src := l.mustCreate("src")

	var sn api.Snapshot
	if err := l.call(api.MethodVMSnapshot, api.VMSnapshotParams{Name: "src", Snapshot: "s1"}, &sn); err != nil {
		t.Fatal(err)
	}
	if sn.Name != "s1" || sn.SourceVM != "src" || sn.StateBytes == 0 {
		t.Fatalf("snapshot: %+v", sn)
	}
	for _, f := range []string{snapManifest, snapStateName, cowName, workDiskName, knownHostsName} {
		if _, err := os.Stat(filepath.Join(sn.Dir, f)); err != nil {
			t.Fatalf("snapshot file %s: %v", f, err)
		}
	}
	if rec, _ := l.get("src"); rec.State != model.StateRunning {
		t.Fatalf("source after snapshot: %s", rec.State)
	}
	l.mustExec("src")
	if err := l.call(api.MethodVMSnapshot, api.VMSnapshotParams{Name: "src", Snapshot: "s1"}, nil); !api.IsKind(err, api.KindAlreadyExists) {
		t.Fatalf("second snapshot named s1: %v", err)
	}
	if err := l.call(api.MethodVMSnapshot, api.VMSnapshotParams{Name: "src", Snapshot: "Bad_Name"}, nil); !api.IsKind(err, api.KindInvalidArgument) {
		t.Fatalf("bad snapshot name: %v", err)
	}
	var list []api.Snapshot
	if err := l.call(api.MethodSnapshotList, nil, &list); err != nil || len(list) != 1 {
		t.Fatalf("snapshot ls: %+v %v", list, err)
	}

	// --from refuses what would shape another machine.
	err := l.call(api.MethodVMCreate, api.VMCreateParams{Name: "x", From: "s1", MemoryMiB: 256}, nil)
	if !api.IsKind(err, api.KindInvalidArgument) || !strings.Contains(err.Error(), "--memory") {
		t.Fatalf("--from with --memory: %v", err)
	}
	if err := l.call(api.MethodVMCreate, api.VMCreateParams{Name: "x", From: "nope"}, nil); !api.IsKind(err, api.KindNotFound) {
		t.Fatalf("--from an unknown snapshot: %v", err)
	}

	var r1 api.VM
	l.failStartAt("") // forget the steps seen so far
	if err := l.call(api.MethodVMCreate, api.VMCreateParams{Name: "r1", From: "s1"}, &r1); err != nil {
		t.Fatal(err)
	}
	// The steps a restore on the double runs (no network: no tap steps).
	steps := l.stepsSeen()
	if len(steps) < 6 || steps[0] != "resolve_snapshot" {
		t.Fatalf("restore steps: %v", steps)
	}
	if r1.State != model.StateRunning || r1.PID == src.PID || r1.Image != src.Image {
		t.Fatalf("restored: %+v", r1)
	}
	l.mustExec("r1")
	srcKH, _ := os.ReadFile(filepath.Join(src.Dir, knownHostsName))
	r1KH, _ := os.ReadFile(filepath.Join(r1.Dir, knownHostsName))
	if len(r1KH) == 0 || hostKeyOf(string(srcKH)) == hostKeyOf(string(r1KH)) {
		t.Fatalf("restored VM kept its source's host key:\n%s\n%s", srcKH, r1KH)
	}

	// Fork: a temporary snapshot, never listed, gone after.
	var f1 api.VM
	if err := l.call(api.MethodVMFork, api.VMForkParams{Name: "src", NewName: "f1"}, &f1); err != nil {
		t.Fatal(err)
	}
	l.mustExec("f1")
	l.mustExec("src")
	if err := l.call(api.MethodSnapshotList, nil, &list); err != nil || len(list) != 1 {
		t.Fatalf("snapshot ls after a fork: %+v %v", list, err)
	}
	noSnapTemps(t, l)

	// A failure after every restore step leaves no VMM, no temp and no
	// reservation that no VMM ran for.
	for _, step := range steps {
		l.failStartAt(step)
		var vm api.VM
		err := l.call(api.MethodVMCreate, api.VMCreateParams{Name: "bad", From: "s1"}, &vm)
		if err == nil || !strings.Contains(err.Error(), "injected") {
			t.Fatalf("restore failing at %s: %v", step, err)
		}
		rec, gerr := l.get("bad")
		if gerr == nil {
			l.noLeftovers(rec.ID)
			if rec.State != model.StateError {
				t.Fatalf("failed at %s: VM left in state %s", step, rec.State)
			}
			if err := l.call(api.MethodVMDelete, api.VMDeleteParams{Name: "bad", Force: true}, nil); err != nil {
				t.Fatal(err)
			}
		}
		noSnapTemps(t, l)
	}
	l.failStartAt("")

	// A daemon killed mid-snapshot leaves a .tmp- directory: the next
	// one removes it before it serves.
	os.MkdirAll(filepath.Join(l.d.vms.snapshotsDir(), snapTmpPrefix+"dead"), 0o700)
	l.restart()
	noSnapTemps(t, l)

	// vm rm keeps the snapshot; restoring it still works.
	if err := l.call(api.MethodVMDelete, api.VMDeleteParams{Name: "src", Force: true}, nil); err != nil {
		t.Fatal(err)
	}
	if err := l.call(api.MethodSnapshotGet, api.NameParams{Name: "s1"}, &sn); err != nil {
		t.Fatalf("snapshot after its VM's rm: %v", err)
	}
	if err := l.call(api.MethodVMCreate, api.VMCreateParams{Name: "r2", From: "s1"}, nil); err != nil {
		t.Fatal(err)
	}
	l.mustExec("r2")
	// --with-snapshots removes a VM's own: r2's snapshot goes, s1 stays.
	if err := l.call(api.MethodVMSnapshot, api.VMSnapshotParams{Name: "r2", Snapshot: "s2"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := l.call(api.MethodVMDelete, api.VMDeleteParams{Name: "r2", Force: true, WithSnapshots: true}, nil); err != nil {
		t.Fatal(err)
	}
	if err := l.call(api.MethodSnapshotList, nil, &list); err != nil || len(list) != 1 || list[0].Name != "s1" {
		t.Fatalf("snapshot ls after rm --with-snapshots: %+v %v", list, err)
	}
	if err := l.call(api.MethodSnapshotDel, api.NameParams{Name: "s1"}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sn.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("snapshot dir after rm: %v", err)
	}
}

// TestSnapshotNeedsCapability: no Snapshots, no snapshot.
func TestSnapshotNeedsCapability(t *testing.T) {
	tdrv := vmmtest.New()
	tdrv.Caps.Snapshots = false
	tdrv.Caps.NoSnapshots = "no snapshots in this test"
	l := newLifecycle(t, tdrv, tdrv, nil)
	l.mustCreate("ns")
	err := l.call(api.MethodVMSnapshot, api.VMSnapshotParams{Name: "ns"}, nil)
	if !api.IsKind(err, api.KindUnavailable) || !strings.Contains(err.Error(), "no snapshots in this test") {
		t.Fatalf("snapshot without the capability: %v", err)
	}
	err = l.call(api.MethodVMFork, api.VMForkParams{Name: "ns"}, nil)
	if !api.IsKind(err, api.KindUnavailable) {
		t.Fatalf("fork without the capability: %v", err)
	}
	noSnapTemps(t, l)
	l.mustExec("ns")
}

func hostKeyOf(knownHosts string) string {
	f := strings.Fields(knownHosts)
	if len(f) < 3 {
		return ""
	}
	return f[2]
}

func noSnapTemps(t *testing.T, l *lifecycle) {
	t.Helper()
	ents, _ := os.ReadDir(l.d.vms.snapshotsDir())
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Fatalf("left in snapshots/: %s", e.Name())
		}
	}
}

// TestRestoreTakesCreatesOwnFields: labels, TTL and idle stop of a VM
// made from a snapshot are its create's, never the source's (which would
// expire or be filtered as the source).
func TestRestoreTakesCreatesOwnFields(t *testing.T) {
	tdrv := vmmtest.New()
	l := newLifecycle(t, tdrv, tdrv, nil)
	var src api.VM
	if err := l.call(api.MethodVMCreate, api.VMCreateParams{Name: "src", SystemOverlaySize: "16M", WorkDiskSize: "128M",
		Labels: map[string]string{"team": "a"}, TTL: "1h", IdleStop: "10m"}, &src); err != nil {
		t.Fatal(err)
	}
	if src.ExpiresAt == "" || src.Labels["team"] != "a" || src.IdleStop == "" {
		t.Fatalf("source: %+v", src)
	}
	if err := l.call(api.MethodVMSnapshot, api.VMSnapshotParams{Name: "src", Snapshot: "s1"}, nil); err != nil {
		t.Fatal(err)
	}
	var r api.VM
	if err := l.call(api.MethodVMCreate, api.VMCreateParams{Name: "r", From: "s1", Labels: map[string]string{"job": "b"}}, &r); err != nil {
		t.Fatal(err)
	}
	if r.ExpiresAt != "" || r.IdleStop != "" || len(r.Labels) != 1 || r.Labels["job"] != "b" {
		t.Fatalf("restored VM: labels %v, expires %q, idle stop %q: want the create's (job=b, none, none)", r.Labels, r.ExpiresAt, r.IdleStop)
	}
	if err := l.call(api.MethodVMCreate, api.VMCreateParams{Name: "r2", From: "s1", TTL: "-1h"}, nil); !api.IsKind(err, api.KindInvalidArgument) {
		t.Fatalf("--from with a bad --ttl: %v", err)
	}
}
