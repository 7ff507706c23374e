package daemon

import (
	"strings"
	"syscall"
	"testing"

	"banger/api"
	"banger/internal/model"
	"banger/internal/vmm/vmmtest"
)

// TestPauseResume: the pause state machine on the test double, whose
// "pause" is SIGSTOP: exec on a paused VM is a conflict naming `vm
// resume`, a restarted daemon re-adopts it as paused (asking the VMM),
// resume brings the agent back, and stop and rm -f work on a paused VM.
func TestPauseResume(t *testing.T) {
	tdrv := vmmtest.New()
	l := newLifecycle(t, tdrv, tdrv, nil)
	vm := l.mustCreate("zz")

	var got api.VM
	if err := l.call(api.MethodVMPause, api.NameParams{Name: "zz"}, &got); err != nil {
		t.Fatal(err)
	}
	if got.State != model.StatePaused {
		t.Fatalf("after pause: state %s", got.State)
	}
	if err := l.call(api.MethodVMPause, api.NameParams{Name: "zz"}, nil); !api.IsKind(err, api.KindConflict) {
		t.Fatalf("pause of a paused VM: %v", err)
	}
	_, err := l.exec("zz", "true")
	if !api.IsKind(err, api.KindConflict) || !strings.Contains(err.Error(), "banger vm resume zz") {
		t.Fatalf("exec in a paused VM: %v", err)
	}
	var vms []api.VM
	if err := l.call(api.MethodVMList, api.VMListParams{}, &vms); err != nil || len(vms) != 1 || vms[0].State != model.StatePaused {
		t.Fatalf("vm ls: %+v %v", vms, err)
	}

	// A new daemon asks the VMM: still paused.
	l.restart()
	rec, err := l.get("zz")
	if err != nil || rec.State != model.StatePaused || rec.Runtime.PID != vm.PID {
		t.Fatalf("after restart: %s pid %d (%v)", rec.State, rec.Runtime.PID, err)
	}

	if err := l.call(api.MethodVMResume, api.NameParams{Name: "zz"}, &got); err != nil {
		t.Fatal(err)
	}
	if got.State != model.StateRunning {
		t.Fatalf("after resume: %s", got.State)
	}
	l.mustExec("zz")
	if err := l.call(api.MethodVMResume, api.NameParams{Name: "zz"}, nil); !api.IsKind(err, api.KindConflict) {
		t.Fatalf("resume of a running VM: %v", err)
	}

	// A VM the record calls running but found paused (a snapshot's daemon
	// died mid-way) is resumed by the next daemon.
	l.stop()
	if err := (&vmmHandleSignal{pid: vm.PID}).stop(); err != nil {
		t.Fatal(err)
	}
	l.start()
	if rec, _ := l.get("zz"); rec.State != model.StateRunning {
		t.Fatalf("a VM left paused behind a running record: %s after restart", rec.State)
	}
	l.mustExec("zz")

	// Stop of a paused VM: graceful (resumed, then powered off).
	if err := l.call(api.MethodVMPause, api.NameParams{Name: "zz"}, nil); err != nil {
		t.Fatal(err)
	}
	var stopped api.VM
	if err := l.call(api.MethodVMStop, api.VMStopParams{Name: "zz"}, &stopped); err != nil || stopped.State != model.StateStopped {
		t.Fatalf("stop of a paused VM: %s %v", stopped.State, err)
	}
	waitGone(t, vm.PID)
	l.noLeftovers(vm.ID)
	if err := l.call(api.MethodVMPause, api.NameParams{Name: "zz"}, nil); !api.IsKind(err, api.KindConflict) {
		t.Fatalf("pause of a stopped VM: %v", err)
	}

	// rm -f of a paused VM.
	v2 := l.mustCreate("zz2")
	if err := l.call(api.MethodVMPause, api.NameParams{Name: "zz2"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := l.call(api.MethodVMDelete, api.VMDeleteParams{Name: "zz2"}, nil); !api.IsKind(err, api.KindConflict) {
		t.Fatalf("rm of a paused VM without -f: %v", err)
	}
	if err := l.call(api.MethodVMDelete, api.VMDeleteParams{Name: "zz2", Force: true}, nil); err != nil {
		t.Fatal(err)
	}
	waitGone(t, v2.PID)
	l.noLeftovers(v2.ID)
}

// TestPauseNeedsSnapshots: a driver without the Snapshots capability
// refuses pause with its reason; the VM keeps running.
func TestPauseNeedsSnapshots(t *testing.T) {
	tdrv := vmmtest.New()
	tdrv.Caps.Snapshots = false
	tdrv.Caps.NoSnapshots = "the test driver was told so"
	l := newLifecycle(t, tdrv, tdrv, nil)
	l.mustCreate("np")
	err := l.call(api.MethodVMPause, api.NameParams{Name: "np"}, nil)
	if !api.IsKind(err, api.KindUnavailable) || !strings.Contains(err.Error(), "told so") {
		t.Fatalf("pause without snapshots: %v", err)
	}
	l.mustExec("np")
}

// vmmHandleSignal stops a double's process behind the daemon's back.
type vmmHandleSignal struct{ pid int }

func (h *vmmHandleSignal) stop() error { return syscall.Kill(h.pid, syscall.SIGSTOP) }
