package provider

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"banger/api"
	"banger/client"
	"banger/internal/procstat"
)

// Taint keeps ordinary pods off banger nodes: only a pod that tolerates it
// becomes a microVM.
var Taint = corev1.Taint{Key: "banger.dev/microvm", Value: "true", Effect: corev1.TaintEffectNoSchedule}

// MaxPods is the node's pod capacity: one VM each.
const MaxPods = 110

// NodeSpec describes the node: capacity from the host's CPUs and memory and
// the disk under the daemon's state dir, the banger taint, OS/arch labels,
// and the address and port the API server reaches this kubelet at.
func NodeSpec(name, nodeIP string, port int32, stateDir, version string) (corev1.Node, error) {
	mem, err := hostMemory()
	if err != nil {
		return corev1.Node{}, err
	}
	disk, err := diskBytes(stateDir)
	if err != nil {
		return corev1.Node{}, fmt.Errorf("the daemon's state dir %s: %w", stateDir, err)
	}
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:              *resource.NewQuantity(int64(runtime.NumCPU()), resource.DecimalSI),
		corev1.ResourceMemory:           *resource.NewQuantity(mem, resource.BinarySI),
		corev1.ResourceEphemeralStorage: *resource.NewQuantity(disk, resource.BinarySI),
		corev1.ResourcePods:             *resource.NewQuantity(MaxPods, resource.DecimalSI),
	}
	n := corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: name,
			Labels: map[string]string{ // NodeRestriction refuses other kubernetes.io/ labels (such as kubernetes.io/role) from a node
				"type":                   "virtual-kubelet",
				"kubernetes.io/hostname": name,
				"kubernetes.io/os":       "linux",
				"kubernetes.io/arch":     runtime.GOARCH,
				"banger.dev/microvm":     "true",
			},
		},
		Spec: corev1.NodeSpec{Taints: []corev1.Taint{Taint}},
		Status: corev1.NodeStatus{
			Phase:       corev1.NodePending,
			Capacity:    capacity,
			Allocatable: capacity.DeepCopy(),
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: nodeIP},
				{Type: corev1.NodeHostName, Address: name},
			},
			DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: port}},
			NodeInfo: corev1.NodeSystemInfo{
				OperatingSystem:         "linux",
				OSImage:                 "banger microVMs",
				Architecture:            runtime.GOARCH,
				KubeletVersion:          version,
				ContainerRuntimeVersion: "banger://" + version,
				KernelVersion:           kernelRelease(),
			},
			Conditions: []corev1.NodeCondition{
				{Type: corev1.NodeReady, Status: corev1.ConditionUnknown},
				{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientMemory"},
				{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasNoDiskPressure"},
				{Type: corev1.NodePIDPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientPID"},
				{Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionFalse, Reason: "BangerBridge"},
			},
		},
	}
	return n, nil
}

func hostMemory() (int64, error) { return procstat.MemInfo("/proc/meminfo", "MemTotal") }

func diskBytes(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Blocks) * int64(st.Bsize), nil
}

func kernelRelease() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

// NodeHealth is the node's heartbeat and Ready condition: Ping is the
// daemon answering (no answer: the lease is not renewed, and the control
// plane marks the node NotReady), Ready is `banger doctor` finding a
// hypervisor it can use.
type NodeHealth struct {
	c        *client.Client
	interval time.Duration
	node     *corev1.Node // as registered; each update is a copy

	mu   sync.Mutex
	last string
}

// NewNodeHealth checks the daemon behind c every interval for node.
func NewNodeHealth(c *client.Client, interval time.Duration, node *corev1.Node) *NodeHealth {
	return &NodeHealth{c: c, interval: interval, node: node.DeepCopy()}
}

// Ping asks the daemon.
func (h *NodeHealth) Ping(ctx context.Context) error {
	_, err := h.c.Ping(ctx)
	return err
}

// NotifyNodeStatus reports the Ready condition now and whenever doctor's
// verdict changes.
func (h *NodeHealth) NotifyNodeStatus(ctx context.Context, cb func(*corev1.Node)) {
	go func() {
		t := time.NewTicker(h.interval)
		defer t.Stop()
		for {
			h.check(ctx, cb)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

func (h *NodeHealth) check(ctx context.Context, cb func(*corev1.Node)) {
	ready, reason, msg := h.verdict(ctx)
	key := fmt.Sprint(ready, reason, msg)
	h.mu.Lock()
	same := key == h.last
	h.last = key
	h.mu.Unlock()
	if same {
		return
	}
	n := h.node.DeepCopy()
	SetReady(n, ready, reason, msg)
	cb(n)
}

// verdict asks doctor whether this host can run VMs now.
func (h *NodeHealth) verdict(ctx context.Context) (bool, string, string) {
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	d, err := h.c.Doctor(cctx)
	if err != nil {
		return false, "BangerDaemonUnreachable", err.Error()
	}
	return Verdict(d)
}

// Verdict reads a doctor result: Ready when a hypervisor backend is usable.
func Verdict(d api.DoctorResult) (bool, string, string) {
	if d.Backend == "" {
		why := d.Why
		if why == "" {
			why = "banger doctor found no usable hypervisor"
		}
		return false, "NoHypervisor", why
	}
	return true, "KubeletReady", "banger daemon ready, VMs boot on " + d.Backend
}

// SetReady sets n's Ready condition.
func SetReady(n *corev1.Node, ready bool, reason, msg string) {
	now := metav1.Now()
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
		n.Status.Phase = corev1.NodeRunning
	}
	for i, c := range n.Status.Conditions {
		if c.Type != corev1.NodeReady {
			continue
		}
		if c.Status != st {
			c.LastTransitionTime = now
		}
		c.Status, c.Reason, c.Message, c.LastHeartbeatTime = st, reason, msg, now
		n.Status.Conditions[i] = c
		return
	}
	n.Status.Conditions = append(n.Status.Conditions, corev1.NodeCondition{Type: corev1.NodeReady, Status: st, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now})
}
