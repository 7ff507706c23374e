package provider

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"banger/api"
	"banger/internal/model"
)

// podState is what the provider knows of one pod beside its VM.
type podState struct {
	pod *corev1.Pod
	vm  *api.VM // nil until the create returned (or after the VM is gone)
	// createErr: the VM could not be made (bad image, no room, ...).
	createErr string
	// stage is the create's last progress stage, for a Pending message;
	// waitReason the Waiting reason while a failed create backs off.
	stage, waitReason string
	startedAt         time.Time
	// deleting: DeletePod began; removed: the VM is gone.
	deleting, removed bool
	// finishedAt is when the provider first saw the main process end.
	finishedAt time.Time
}

// status derives the pod's status from its VM. hostIP is the node's.
func (s *podState) status(hostIP string, now time.Time) corev1.PodStatus {
	c := s.pod.Spec.Containers[0]
	st := corev1.PodStatus{
		HostIP:    hostIP,
		StartTime: &metav1.Time{Time: s.startedAtOr(now)},
	}
	if hostIP != "" {
		st.HostIPs = []corev1.HostIP{{IP: hostIP}}
	}
	cs := corev1.ContainerStatus{Name: c.Name, Image: c.Image, ImageID: c.Image}
	ready := false
	switch {
	case s.createErr != "":
		st.Phase = corev1.PodFailed
		st.Reason, st.Message = "VMCreateFailed", s.createErr
		cs.State.Terminated = &corev1.ContainerStateTerminated{ExitCode: 128, Reason: "VMCreateFailed", Message: s.createErr, FinishedAt: metav1.Time{Time: s.finishedAtOr(now)}}
	case s.vm == nil && s.removed:
		st.Phase = corev1.PodSucceeded
		cs.State.Terminated = &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed", FinishedAt: metav1.Time{Time: s.finishedAtOr(now)}}
	case s.vm == nil:
		st.Phase = corev1.PodPending
		msg := "creating the VM"
		if s.stage != "" {
			msg = s.stage
		}
		reason := "ContainerCreating"
		if s.waitReason != "" {
			reason = s.waitReason
		}
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: msg}
	default:
		vm := s.vm
		st.PodIP = vm.GuestIP
		if vm.GuestIP != "" {
			st.PodIPs = []corev1.PodIP{{IP: vm.GuestIP}}
		}
		cs.ContainerID = "banger://" + vm.ID
		switch vm.State {
		case model.StateRunning, model.StatePaused:
			st.Phase = corev1.PodRunning
			cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.Time{Time: s.startedAtOr(now)}}
			cs.Started = ptr(true)
			ready = vm.State == model.StateRunning
		case model.StateCreated, model.StateStarting:
			st.Phase = corev1.PodPending
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating", Message: "booting the VM"}
		case model.StateStopping:
			st.Phase = corev1.PodRunning
			cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.Time{Time: s.startedAtOr(now)}}
		case model.StateError:
			st.Phase = corev1.PodFailed
			st.Reason, st.Message = "VMError", vm.LastError
			cs.State.Terminated = &corev1.ContainerStateTerminated{ExitCode: 128, Reason: "VMError", Message: vm.LastError, StartedAt: metav1.Time{Time: s.startedAtOr(now)}, FinishedAt: metav1.Time{Time: s.finishedAtOr(now)}}
		default: // stopped: the main process ended (its code), or the VM was stopped
			code, reason := 0, "Completed"
			if vm.MainExitCode != nil {
				code = *vm.MainExitCode
				if code != 0 {
					reason = "Error"
				}
			} else if !s.deleting {
				code, reason = 137, "VMStopped"
			}
			st.Phase = terminalPhase(code)
			cs.State.Terminated = &corev1.ContainerStateTerminated{ExitCode: int32(code), Reason: reason, ContainerID: cs.ContainerID, StartedAt: metav1.Time{Time: s.startedAtOr(now)}, FinishedAt: metav1.Time{Time: s.finishedAtOr(now)}}
		}
	}
	if s.deleting && st.Phase == corev1.PodRunning {
		ready = false
	}
	cs.Ready = ready
	st.ContainerStatuses = []corev1.ContainerStatus{cs}
	t := metav1.Time{Time: now}
	cond := func(ty corev1.PodConditionType, ok bool) corev1.PodCondition {
		v := corev1.ConditionFalse
		if ok {
			v = corev1.ConditionTrue
		}
		return corev1.PodCondition{Type: ty, Status: v, LastTransitionTime: t}
	}
	st.Conditions = []corev1.PodCondition{
		cond(corev1.PodScheduled, true),
		cond(corev1.PodInitialized, true),
		cond(corev1.ContainersReady, ready),
		cond(corev1.PodReady, ready),
	}
	return st
}

// terminalPhase is the phase of a pod whose main process ended with code
// (the VM stopped, so no restart is coming).
func terminalPhase(code int) corev1.PodPhase {
	if code == 0 {
		return corev1.PodSucceeded
	}
	return corev1.PodFailed
}

func (s *podState) startedAtOr(now time.Time) time.Time {
	if s.startedAt.IsZero() {
		return now
	}
	return s.startedAt
}

func (s *podState) finishedAtOr(now time.Time) time.Time {
	if s.finishedAt.IsZero() {
		return now
	}
	return s.finishedAt
}

func ptr[T any](v T) *T { return &v }
