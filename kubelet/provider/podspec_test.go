package provider

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"banger/internal/model"
)

func testPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web.v1", UID: types.UID("0f6c2a57-8d1e-4c3b-9a8e-1b2c3d4e5f60")},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{
				Name:       "main",
				Image:      "busybox",
				Command:    []string{"sh", "-c"},
				Args:       []string{"echo hello; sleep 3600"},
				Env:        []corev1.EnvVar{{Name: "A", Value: "1"}, {Name: "B", Value: "x=y"}},
				WorkingDir: "/srv",
				Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{
					corev1.ResourceCPU:    resource.MustParse("1500m"),
					corev1.ResourceMemory: resource.MustParse("256Mi"),
				}},
				Ports: []corev1.ContainerPort{{ContainerPort: 80}, {ContainerPort: 53, HostPort: 5353, Protocol: corev1.ProtocolUDP}},
			}},
			Volumes: []corev1.Volume{{Name: "kube-api-access-abcde", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{}}}},
		},
	}
}

func TestCreateParams(t *testing.T) {
	p, err := CreateParams(testPod(), Options{Node: "n1", NAT: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := model.ValidateVMName(p.Name); err != nil {
		t.Fatalf("VM name %q: %v", p.Name, err)
	}
	if err := model.ValidateLabels(p.Labels); err != nil {
		t.Fatalf("labels %v: %v", p.Labels, err)
	}
	if p.Entrypoint == nil || strings.Join(*p.Entrypoint, " ") != "sh -c" || strings.Join(p.Cmd, " ") != "echo hello; sleep 3600" {
		t.Errorf("entrypoint %v cmd %v", p.Entrypoint, p.Cmd)
	}
	if p.VCPU != 2 || p.MemoryMiB != 256 {
		t.Errorf("vcpu %d memory %d, want 2 and 256 (1500m rounds up)", p.VCPU, p.MemoryMiB)
	}
	if p.Restart != "no" || p.WorkingDir != "/srv" || !p.NAT || p.Image != "busybox" {
		t.Errorf("restart %q workdir %q nat %v image %q", p.Restart, p.WorkingDir, p.NAT, p.Image)
	}
	if strings.Join(p.Env, ",") != "A=1,B=x=y" {
		t.Errorf("env %v", p.Env)
	}
	if len(p.Ports) != 1 || p.Ports[0] != "5353:53/udp" {
		t.Errorf("ports %v: only a hostPort is forwarded", p.Ports)
	}
	if p.Labels[LabelPodUID] != "0f6c2a57-8d1e-4c3b-9a8e-1b2c3d4e5f60" || p.Labels[LabelNode] != "n1" || p.Labels[LabelPodName] != "web.v1" {
		t.Errorf("labels %v", p.Labels)
	}
}

func TestCreateParamsDefaults(t *testing.T) {
	pod := testPod()
	c := &pod.Spec.Containers[0]
	c.Command, c.Args = nil, []string{"serve"}
	c.Resources = corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")}}
	pod.Spec.RestartPolicy = ""
	p, err := CreateParams(pod, Options{Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	if p.Entrypoint != nil || strings.Join(p.Cmd, " ") != "serve" {
		t.Errorf("args alone keep the image's entrypoint: %v %v", p.Entrypoint, p.Cmd)
	}
	if p.VCPU != 0 || p.MemoryMiB != 0 {
		t.Errorf("requests without limits take banger's defaults, got vcpu %d memory %d", p.VCPU, p.MemoryMiB)
	}
	if p.Restart != "always" {
		t.Errorf("restart %q, want always (the pod default)", p.Restart)
	}
}

func TestCreateParamsRefuses(t *testing.T) {
	for name, mutate := range map[string]func(*corev1.Pod){
		"2 containers":   func(p *corev1.Pod) { p.Spec.Containers = append(p.Spec.Containers, p.Spec.Containers[0]) },
		"initContainers": func(p *corev1.Pod) { p.Spec.InitContainers = []corev1.Container{{Name: "i"}} },
		"hostNetwork":    func(p *corev1.Pod) { p.Spec.HostNetwork = true },
		`volume "data"`: func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
		},
		"memory limit 10Mi": func(p *corev1.Pod) {
			p.Spec.Containers[0].Resources.Limits[corev1.ResourceMemory] = resource.MustParse("10Mi")
		},
		"cpu limit 100": func(p *corev1.Pod) {
			p.Spec.Containers[0].Resources.Limits[corev1.ResourceCPU] = resource.MustParse("100")
		},
	} {
		pod := testPod()
		mutate(pod)
		_, err := CreateParams(pod, Options{Node: "n1"})
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		want := strings.Fields(name)[len(strings.Fields(name))-1]
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %q does not name %q", name, err, want)
		}
	}
}

func TestVMNameLongAndDistinct(t *testing.T) {
	a, b := testPod(), testPod()
	a.Name = strings.Repeat("x", 200)
	b.Name = a.Name
	b.UID = "another"
	na, nb := VMName(a), VMName(b)
	for _, n := range []string{na, nb} {
		if err := model.ValidateVMName(n); err != nil {
			t.Errorf("%q: %v", n, err)
		}
	}
	if na == nb {
		t.Errorf("two UIDs, one VM name %q", na)
	}
}
