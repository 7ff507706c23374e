// Package provider is banger's virtual-kubelet provider: one pod is one
// banger VM, created, watched and removed through the daemon's public
// client package.
package provider

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"banger/api"
)

// Labels the kubelet puts on every VM it makes: the pod's UID is how a
// restarted kubelet matches VMs to pods again, the node how two kubelets
// on one daemon would keep apart.
const (
	LabelPodUID       = "banger.dev/pod-uid"
	LabelPodNamespace = "banger.dev/pod-namespace"
	LabelPodName      = "banger.dev/pod-name"
	LabelNode         = "banger.dev/node"
)

// serviceAccountVolumePrefix names the projected volume the API server adds
// to every pod (the service-account token): it is accepted and not mounted.
const serviceAccountVolumePrefix = "kube-api-access-"

// Options are the node-wide choices that shape every pod's VM.
type Options struct {
	Node string
	// NAT gives every pod VM outbound NAT (what a pod expects).
	NAT bool
	// MaxCreates is how many VM creates run at once (default 4); more
	// pods wait Pending.
	MaxCreates int
}

// VMName is the pod's VM name: a DNS label from the namespace and name,
// with a hash of the UID so a pod recreated under the same name (a
// StatefulSet) never collides with its predecessor's VM.
func VMName(pod *corev1.Pod) string {
	sum := sha256.Sum256([]byte(pod.UID))
	suffix := hex.EncodeToString(sum[:])[:8]
	base := sanitize(pod.Namespace + "-" + pod.Name)
	const maxBase = 63 - 1 - 8 - 4 // "pod-" + base + "-" + suffix
	if len(base) > maxBase {
		base = strings.TrimRight(base[:maxBase], "-")
	}
	return "pod-" + base + "-" + suffix
}

func sanitize(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	return strings.Trim(b.String(), "-")
}

// CreateParams maps a pod onto a banger VM, or says which field it cannot
// honour. First version: one container per pod.
func CreateParams(pod *corev1.Pod, o Options) (api.VMCreateParams, error) {
	var p api.VMCreateParams
	if err := refuseUnsupported(pod); err != nil {
		return p, err
	}
	c := pod.Spec.Containers[0]
	p.Name = VMName(pod)
	p.Image = c.Image
	p.NAT = o.NAT
	if len(c.Command) > 0 {
		ep := append([]string(nil), c.Command...)
		p.Entrypoint = &ep
	}
	p.Cmd = append([]string(nil), c.Args...)
	for _, e := range c.Env {
		// valueFrom is resolved into Value by virtual-kubelet before the
		// provider sees the pod.
		p.Env = append(p.Env, e.Name+"="+e.Value)
	}
	p.WorkingDir = c.WorkingDir
	if u := userOf(pod, c); u != "" {
		p.User = u
	}
	switch pod.Spec.RestartPolicy {
	case corev1.RestartPolicyAlways, "":
		p.Restart = "always"
	case corev1.RestartPolicyOnFailure:
		p.Restart = "on-failure"
	case corev1.RestartPolicyNever:
		p.Restart = "no"
	}
	if q, ok := c.Resources.Limits[corev1.ResourceCPU]; ok {
		v, err := vcpus(q)
		if err != nil {
			return p, err
		}
		p.VCPU = v
	}
	if q, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
		m, err := memoryMiB(q)
		if err != nil {
			return p, err
		}
		p.MemoryMiB = m
	}
	for _, port := range c.Ports {
		if port.HostPort == 0 {
			continue // the pod IP is the guest IP: every port is reachable there
		}
		proto := strings.ToLower(string(port.Protocol))
		if proto == "" {
			proto = "tcp"
		}
		spec := fmt.Sprintf("%d:%d/%s", port.HostPort, port.ContainerPort, proto)
		if port.HostIP != "" {
			spec = port.HostIP + ":" + spec
		}
		p.Ports = append(p.Ports, spec)
	}
	p.Labels = map[string]string{
		LabelPodUID:       string(pod.UID),
		LabelPodNamespace: pod.Namespace,
		LabelPodName:      pod.Name,
		LabelNode:         o.Node,
	}
	return p, nil
}

// refuseUnsupported names the first pod field this provider does not map.
func refuseUnsupported(pod *corev1.Pod) error {
	s := pod.Spec
	switch {
	case len(s.Containers) != 1:
		return fmt.Errorf("pod %s/%s has %d containers: a banger pod runs exactly one (one pod is one VM)", pod.Namespace, pod.Name, len(s.Containers))
	case len(s.InitContainers) > 0:
		return fmt.Errorf("pod %s/%s: initContainers are not supported by banger nodes", pod.Namespace, pod.Name)
	case len(s.EphemeralContainers) > 0:
		return fmt.Errorf("pod %s/%s: ephemeralContainers are not supported by banger nodes", pod.Namespace, pod.Name)
	case s.HostNetwork, s.HostPID, s.HostIPC:
		return fmt.Errorf("pod %s/%s: hostNetwork/hostPID/hostIPC cannot be given to a microVM", pod.Namespace, pod.Name)
	}
	for _, v := range s.Volumes {
		if v.Projected != nil && strings.HasPrefix(v.Name, serviceAccountVolumePrefix) {
			continue
		}
		return fmt.Errorf("pod %s/%s: volume %q is not supported by banger nodes (only the service-account token volume is accepted, and not mounted)", pod.Namespace, pod.Name, v.Name)
	}
	c := s.Containers[0]
	for _, m := range c.VolumeMounts {
		if !strings.HasPrefix(m.Name, serviceAccountVolumePrefix) {
			return fmt.Errorf("pod %s/%s: volumeMount %q is not supported by banger nodes", pod.Namespace, pod.Name, m.Name)
		}
	}
	if c.Stdin || c.TTY {
		return fmt.Errorf("pod %s/%s: container stdin/tty are not supported (use kubectl exec -it)", pod.Namespace, pod.Name)
	}
	if c.Image == "" {
		return fmt.Errorf("pod %s/%s: container %q has no image", pod.Namespace, pod.Name, c.Name)
	}
	return nil
}

// userOf is the container's runAsUser[:runAsGroup] (container first, then
// pod), as numeric ids banger-init looks up in the guest.
func userOf(pod *corev1.Pod, c corev1.Container) string {
	var uid, gid *int64
	if ps := pod.Spec.SecurityContext; ps != nil {
		uid, gid = ps.RunAsUser, ps.RunAsGroup
	}
	if cs := c.SecurityContext; cs != nil {
		if cs.RunAsUser != nil {
			uid = cs.RunAsUser
		}
		if cs.RunAsGroup != nil {
			gid = cs.RunAsGroup
		}
	}
	if uid == nil {
		return ""
	}
	if gid == nil {
		return fmt.Sprint(*uid)
	}
	return fmt.Sprintf("%d:%d", *uid, *gid)
}

// vcpus rounds a CPU limit up to whole vCPUs (500m is one vCPU).
func vcpus(q resource.Quantity) (int, error) {
	m := q.MilliValue()
	if m <= 0 {
		return 0, fmt.Errorf("cpu limit %s: want more than 0", q.String())
	}
	v := int((m + 999) / 1000)
	if v > 64 {
		return 0, fmt.Errorf("cpu limit %s: at most 64 vCPUs per banger VM", q.String())
	}
	return v, nil
}

// memoryMiB rounds a memory limit up to MiB.
func memoryMiB(q resource.Quantity) (int, error) {
	b := q.Value()
	const mib = 1 << 20
	if b < 64*mib {
		return 0, fmt.Errorf("memory limit %s: a banger VM needs at least 64Mi", q.String())
	}
	return int((b + mib - 1) / mib), nil
}
