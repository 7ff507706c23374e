package provider

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"banger/api"
	"banger/internal/model"
)

func TestStatus(t *testing.T) {
	now := time.Now()
	three, zero := 3, 0
	for _, tc := range []struct {
		name  string
		s     podState
		phase corev1.PodPhase
		ready bool
		exit  *int32
	}{
		{"creating", podState{stage: "pulling image"}, corev1.PodPending, false, nil},
		{"create failed", podState{createErr: "no such image"}, corev1.PodFailed, false, ptr[int32](128)},
		{"running", podState{vm: &api.VM{ID: "i", State: model.StateRunning, GuestIP: "172.30.0.5"}}, corev1.PodRunning, true, nil},
		{"main exit 3", podState{vm: &api.VM{ID: "i", State: model.StateStopped, MainExitCode: &three}}, corev1.PodFailed, false, ptr[int32](3)},
		{"main exit 0", podState{vm: &api.VM{ID: "i", State: model.StateStopped, MainExitCode: &zero}}, corev1.PodSucceeded, false, ptr[int32](0)},
		{"stopped outside", podState{vm: &api.VM{ID: "i", State: model.StateStopped}}, corev1.PodFailed, false, ptr[int32](137)},
		{"vm error", podState{vm: &api.VM{ID: "i", State: model.StateError, LastError: "boot failed"}}, corev1.PodFailed, false, ptr[int32](128)},
		{"deleted", podState{removed: true, deleting: true}, corev1.PodSucceeded, false, ptr[int32](0)},
	} {
		tc.s.pod = testPod()
		st := tc.s.status("10.0.0.1", now)
		if st.Phase != tc.phase {
			t.Errorf("%s: phase %s, want %s", tc.name, st.Phase, tc.phase)
		}
		cs := st.ContainerStatuses[0]
		if cs.Ready != tc.ready {
			t.Errorf("%s: ready %v, want %v", tc.name, cs.Ready, tc.ready)
		}
		switch {
		case tc.exit == nil && cs.State.Terminated != nil:
			t.Errorf("%s: terminated (%d), want not", tc.name, cs.State.Terminated.ExitCode)
		case tc.exit != nil && (cs.State.Terminated == nil || cs.State.Terminated.ExitCode != *tc.exit):
			t.Errorf("%s: state %+v, want exit %d", tc.name, cs.State, *tc.exit)
		}
		if tc.s.vm != nil && tc.s.vm.GuestIP != "" && st.PodIP != tc.s.vm.GuestIP {
			t.Errorf("%s: pod IP %q, want the guest's %q", tc.name, st.PodIP, tc.s.vm.GuestIP)
		}
		if st.HostIP != "10.0.0.1" {
			t.Errorf("%s: host IP %q", tc.name, st.HostIP)
		}
	}
}

func TestTailLines(t *testing.T) {
	in := []byte("a\nb\nc\n")
	for n, want := range map[int]string{1: "c\n", 2: "b\nc\n", 5: "a\nb\nc\n"} {
		if got := string(tailLines(in, n)); got != want {
			t.Errorf("tail %d: %q, want %q", n, got, want)
		}
	}
}

func TestVerdict(t *testing.T) {
	if ok, _, _ := Verdict(api.DoctorResult{Backend: "qemu"}); !ok {
		t.Error("a backend: not ready")
	}
	ok, reason, msg := Verdict(api.DoctorResult{Why: "no /dev/kvm and no qemu-system-x86_64"})
	if ok || reason != "NoHypervisor" || msg != "no /dev/kvm and no qemu-system-x86_64" {
		t.Errorf("no backend: %v %q %q", ok, reason, msg)
	}
}

func TestBackoff(t *testing.T) {
	want := []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, 5 * time.Minute, 5 * time.Minute}
	for i, w := range want {
		if got := backoff(i); got != w {
			t.Errorf("backoff(%d) = %s, want %s", i, got, w)
		}
	}
}

func TestStatusBackingOff(t *testing.T) {
	s := podState{pod: testPod(), waitReason: "ImagePullBackOff", stage: "no such image (retrying in 10s)"}
	st := s.status("", time.Now())
	w := st.ContainerStatuses[0].State.Waiting
	if st.Phase != corev1.PodPending || w == nil || w.Reason != "ImagePullBackOff" || w.Message != s.stage {
		t.Errorf("a create backing off: phase %s, waiting %+v", st.Phase, w)
	}
}
