package provider

import (
	"context"
	"errors"
	"fmt"
	"log"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/record"

	"banger/api"
	"banger/client"
	"banger/internal/model"
)

// Provider runs the pods scheduled to one node as VMs of one banger daemon.
type Provider struct {
	c      *client.Client
	opts   Options
	hostIP string
	pods   corev1listers.PodLister // the API server's view: orphans are VMs whose pod it lacks
	rec    record.EventRecorder

	mu     sync.Mutex
	byKey  map[string]*podState // namespace/name
	notify func(*corev1.Pod)
	// poll is how often VM states are read back (status, orphans).
	poll time.Duration
	// slots bounds the creates in flight (Options.MaxCreates): a burst of
	// pods queues here, Pending, instead of starting every boot at once.
	slots chan struct{}
	// sweep: the pod lister has synced, so a VM whose pod it lacks is an
	// orphan (before that, every VM would look like one).
	sweep atomic.Bool
}

// StartOrphanSweep lets the sync loop remove VMs whose pod is gone; call it
// once the pod informer has synced (the node is ready).
func (p *Provider) StartOrphanSweep() { p.sweep.Store(true) }

// New makes a provider for node o.Node on the daemon behind c. pods is the
// node's pod lister; rec records the pull and boot events.
func New(c *client.Client, o Options, hostIP string, pods corev1listers.PodLister, rec record.EventRecorder) *Provider {
	n := o.MaxCreates
	if n <= 0 {
		n = 4
	}
	return &Provider{c: c, opts: o, hostIP: hostIP, pods: pods, rec: rec, byKey: map[string]*podState{}, poll: 2 * time.Second, slots: make(chan struct{}, n)}
}

func key(ns, name string) string { return ns + "/" + name }

// Adopt reads back the VMs this node made before a kubelet restart, so
// GetPods reports them and CreatePod for the same pod UID adopts instead of
// creating a second VM. Call it before the pod controller runs.
func (p *Provider) Adopt(ctx context.Context) (int, error) {
	vms, err := p.nodeVMs(ctx)
	if err != nil {
		return 0, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range vms {
		vm := vms[i]
		pod := &corev1.Pod{}
		pod.Namespace, pod.Name = vm.Labels[LabelPodNamespace], vm.Labels[LabelPodName]
		pod.UID = types.UID(vm.Labels[LabelPodUID])
		pod.Spec.Containers = []corev1.Container{{Name: "main", Image: vm.Image}}
		if pod.Namespace == "" || pod.Name == "" || pod.UID == "" {
			continue
		}
		if live, err := p.pods.Pods(pod.Namespace).Get(pod.Name); err == nil && live.UID == pod.UID {
			pod = live.DeepCopy()
		}
		p.byKey[key(pod.Namespace, pod.Name)] = &podState{pod: pod, vm: &vm, startedAt: parseTime(vm.CreatedAt)}
	}
	return len(vms), nil
}

func (p *Provider) nodeVMs(ctx context.Context) ([]api.VM, error) {
	return p.c.ListVMs(ctx, api.VMListParams{All: true, Filters: []string{"label=" + LabelNode + "=" + p.opts.Node}})
}

// CreatePod starts the pod's VM in the background: the pod is Pending while
// the image is pulled and the VM boots, Running at agent-ready.
func (p *Provider) CreatePod(ctx context.Context, pod *corev1.Pod) error {
	params, err := CreateParams(pod, p.opts)
	if err != nil {
		return errdefs.AsInvalidInput(err)
	}
	p.mu.Lock()
	if s, ok := p.byKey[key(pod.Namespace, pod.Name)]; ok {
		if s.pod.UID == pod.UID {
			s.pod = pod.DeepCopy() // adopted after a restart: the same pod, the same VM
			p.mu.Unlock()
			return nil
		}
		p.mu.Unlock()
		return fmt.Errorf("pod %s/%s: the VM of its predecessor (uid %s) is still being removed; retrying", pod.Namespace, pod.Name, s.pod.UID)
	}
	s := &podState{pod: pod.DeepCopy(), startedAt: time.Now()}
	p.byKey[key(pod.Namespace, pod.Name)] = s
	p.mu.Unlock()
	go p.create(pod.DeepCopy(), s, params)
	return nil
}

func (p *Provider) create(pod *corev1.Pod, s *podState, params api.VMCreateParams) {
	for attempt := 0; ; attempt++ {
		vm, pastImage, err := p.createOnce(pod, s, params)
		if p.isDeleting(s) {
			if err == nil {
				p.mu.Lock()
				s.vm = &vm
				p.mu.Unlock()
			}
			p.remove(s) // DeletePod came while it queued or booted
			return
		}
		if err == nil {
			p.mu.Lock()
			s.vm, s.waitReason = &vm, ""
			p.mu.Unlock()
			p.event(pod, corev1.EventTypeNormal, "Started", "VM %s ready at %s", vm.Name, vm.GuestIP)
			p.push(s)
			return
		}
		if api.IsKind(err, api.KindAlreadyExists) {
			// A create that raced an adoption: the VM may be this pod's.
			if got, ierr := p.c.InspectVM(context.Background(), params.Name); ierr == nil && got.Labels[LabelPodUID] == string(pod.UID) {
				p.mu.Lock()
				s.vm = &got
				p.mu.Unlock()
				p.push(s)
				return
			}
		}
		p.event(pod, corev1.EventTypeWarning, "Failed", "VM %s: %v", params.Name, err)
		if pod.Spec.RestartPolicy == corev1.RestartPolicyNever || api.KindOf(err) == api.KindInvalidArgument {
			p.mu.Lock()
			s.createErr, s.finishedAt = err.Error(), time.Now()
			p.mu.Unlock()
			p.push(s)
			return
		}
		// A pod that restarts is retried with a growing back-off, as a
		// kubelet does (ImagePullBackOff): a bad image must not turn into a
		// ReplicaSet replacing failed pods as fast as it can. The failed
		// VM (kept by the daemon for vm logs) goes first: the retry reuses
		// its name.
		p.removeFailed(params.Name, pod.UID)
		delay := backoff(attempt)
		reason := "ImagePullBackOff" // it failed resolving or pulling the image
		if pastImage {
			reason = "CreateContainerError"
		}
		p.mu.Lock()
		s.waitReason, s.stage = reason, fmt.Sprintf("%v (retrying in %s)", err, delay)
		p.mu.Unlock()
		p.push(s)
		p.event(pod, corev1.EventTypeWarning, "BackOff", "retrying the VM create in %s", delay)
		for end := time.Now().Add(delay); time.Now().Before(end) && !p.isDeleting(s); {
			time.Sleep(250 * time.Millisecond)
		}
	}
}

// backoff is the wait before create attempt n+1: 10 s doubling to 5 min.
func backoff(attempt int) time.Duration {
	d := 10 * time.Second
	for i := 0; i < attempt && d < 5*time.Minute; i++ {
		d *= 2
	}
	return min(d, 5*time.Minute)
}

// createOnce runs one vm.create within a create slot; pastImage: it got
// past the image (a kernel stage or the reservation came after it; a
// failed create's rollback stages come after any of them).
func (p *Provider) createOnce(pod *corev1.Pod, s *podState, params api.VMCreateParams) (vm api.VM, pastImage bool, err error) {
	select {
	case p.slots <- struct{}{}:
	default:
		p.mu.Lock()
		s.stage = "waiting for a create slot (--max-creates)"
		p.mu.Unlock()
		p.slots <- struct{}{}
	}
	defer func() { <-p.slots }()
	if p.isDeleting(s) { // deleted while it queued: nothing is made
		return vm, false, errors.New("deleted")
	}
	p.event(pod, corev1.EventTypeNormal, "Creating", "creating VM %s from image %s", params.Name, params.Image)
	stage := ""
	vm, err = p.c.CreateVM(context.Background(), params, func(pr api.Progress) {
		if pr.Stage == "" || pr.Stage == stage {
			return
		}
		stage = pr.Stage
		if strings.Contains(stage, "kernel") || stage == "reserve_vm" {
			pastImage = true
		}
		p.mu.Lock()
		s.stage = pr.Stage
		p.mu.Unlock()
		p.event(pod, corev1.EventTypeNormal, "Progress", "%s", pr.Stage)
	})
	return vm, pastImage, err
}

func (p *Provider) isDeleting(s *podState) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return s.deleting
}

// removeFailed removes a VM a failed create left, if it is this pod's.
func (p *Provider) removeFailed(name string, uid types.UID) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	vm, err := p.c.InspectVM(ctx, name)
	if err != nil || vm.Labels[LabelPodUID] != string(uid) {
		return
	}
	p.removeVM(ctx, name, "a failed create's VM")
}

// removeVM force-removes a VM within 2 minutes (gone already is fine) and
// logs why it could not; what says whose VM it is.
func (p *Provider) removeVM(ctx context.Context, name, what string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	_, err := p.c.RemoveVM(ctx, api.VMDeleteParams{Name: name, Force: true})
	if err != nil && !api.IsKind(err, api.KindNotFound) {
		log.Printf("banger-kubelet: remove %s (%s): %v", name, what, err)
		return err
	}
	return nil
}

// UpdatePod: a pod's spec is immutable where banger maps it; only a pod
// recreated under the same name (a new UID) needs work, done by CreatePod.
func (p *Provider) UpdatePod(ctx context.Context, pod *corev1.Pod) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s, ok := p.byKey[key(pod.Namespace, pod.Name)]; ok && s.pod.UID == pod.UID {
		s.pod = pod.DeepCopy()
	}
	return nil
}

// DeletePod stops the VM (clean poweroff, within the pod's grace period,
// then forced) and removes it; the terminal status follows through
// NotifyPods, after which virtual-kubelet deletes the pod object.
func (p *Provider) DeletePod(ctx context.Context, pod *corev1.Pod) error {
	p.mu.Lock()
	s, ok := p.byKey[key(pod.Namespace, pod.Name)]
	if !ok {
		// Already removed (virtual-kubelet calls again on every update of
		// a terminating pod) or never here: nothing to do, and no error
		// event for the user to wonder about.
		p.mu.Unlock()
		return nil
	}
	if s.deleting {
		p.mu.Unlock()
		return nil
	}
	s.deleting = true
	if pod.DeletionGracePeriodSeconds != nil {
		s.pod.DeletionGracePeriodSeconds = pod.DeletionGracePeriodSeconds
	}
	booting := s.vm == nil && s.createErr == ""
	p.mu.Unlock()
	if !booting {
		go p.remove(s)
	}
	return nil
}

func (p *Provider) remove(s *podState) {
	p.mu.Lock()
	pod := s.pod.DeepCopy()
	var name string
	if s.vm != nil {
		name = s.vm.Name
	}
	p.mu.Unlock()
	if name != "" {
		grace := 30 * time.Second
		if g := pod.DeletionGracePeriodSeconds; g != nil {
			grace = time.Duration(*g) * time.Second
		} else if g := pod.Spec.TerminationGracePeriodSeconds; g != nil {
			grace = time.Duration(*g) * time.Second
		}
		ctx, cancel := context.WithTimeout(context.Background(), grace)
		_, err := p.c.StopVM(ctx, name, false)
		cancel()
		if err != nil {
			p.event(pod, corev1.EventTypeNormal, "Killing", "VM %s did not power off within %s: stopping it by force", name, grace)
		} else {
			p.event(pod, corev1.EventTypeNormal, "Killing", "VM %s powered off", name)
		}
		if err := p.removeVM(context.Background(), name, "the VM of pod "+pod.Namespace+"/"+pod.Name+"; retried at the next sync"); err != nil {
			p.mu.Lock()
			s.deleting = false // the next DeletePod or orphan sweep retries
			p.mu.Unlock()
			return
		}
	}
	p.mu.Lock()
	if s.vm != nil && s.vm.MainExitCode == nil && s.vm.State == model.StateRunning {
		s.vm = nil
	}
	s.removed = true
	if s.finishedAt.IsZero() {
		s.finishedAt = time.Now()
	}
	if cur, ok := p.byKey[key(pod.Namespace, pod.Name)]; ok && cur == s {
		delete(p.byKey, key(pod.Namespace, pod.Name))
	}
	p.mu.Unlock()
	p.push(s)
}

// GetPod returns the pod as the provider runs it, with its status.
func (p *Provider) GetPod(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s, ok := p.byKey[key(namespace, name)]
	if !ok {
		return nil, errdefs.NotFoundf("pod %s/%s is not on this node", namespace, name)
	}
	return p.podWithStatusLocked(s), nil
}

// GetPodStatus returns the pod's status.
func (p *Provider) GetPodStatus(ctx context.Context, namespace, name string) (*corev1.PodStatus, error) {
	pod, err := p.GetPod(ctx, namespace, name)
	if err != nil {
		return nil, err
	}
	return &pod.Status, nil
}

// GetPods returns every pod this node runs (adopted ones included).
func (p *Provider) GetPods(ctx context.Context) ([]*corev1.Pod, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*corev1.Pod, 0, len(p.byKey))
	for _, s := range p.byKey {
		out = append(out, p.podWithStatusLocked(s))
	}
	return out, nil
}

// caller holds p.mu
func (p *Provider) podWithStatusLocked(s *podState) *corev1.Pod {
	pod := s.pod.DeepCopy()
	pod.Status = s.status(p.hostIP, time.Now())
	return pod
}

// NotifyPods registers virtual-kubelet's status callback and starts the
// loop that reads VM states back from the daemon.
func (p *Provider) NotifyPods(ctx context.Context, cb func(*corev1.Pod)) {
	p.mu.Lock()
	p.notify = cb
	p.mu.Unlock()
	go p.syncLoop(ctx)
}

func (p *Provider) push(s *podState) {
	p.mu.Lock()
	cb := p.notify
	pod := p.podWithStatusLocked(s)
	p.mu.Unlock()
	if cb != nil {
		cb(pod)
	}
}

// syncLoop reads every VM of this node back: a changed VM state becomes a
// pod status, and a VM whose pod the API server no longer has is removed
// (no VM outlives its pod).
func (p *Provider) syncLoop(ctx context.Context) {
	t := time.NewTicker(p.poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := p.syncOnce(ctx); err != nil && ctx.Err() == nil {
			log.Printf("banger-kubelet: sync: %v", err)
		}
	}
}

func (p *Provider) syncOnce(ctx context.Context) error {
	vms, err := p.nodeVMs(ctx)
	if err != nil {
		return err
	}
	var changed []*podState
	var orphans []api.VM
	p.mu.Lock()
	seen := map[string]bool{}
	for i := range vms {
		vm := vms[i]
		k := key(vm.Labels[LabelPodNamespace], vm.Labels[LabelPodName])
		s, ok := p.byKey[k]
		if !ok || string(s.pod.UID) != vm.Labels[LabelPodUID] {
			if p.sweep.Load() && !p.podExists(vm) {
				orphans = append(orphans, vm)
			}
			continue
		}
		seen[k] = true
		if s.vm == nil || s.vm.State != vm.State || !sameExit(s.vm.MainExitCode, vm.MainExitCode) || s.vm.GuestIP != vm.GuestIP {
			if vm.State == model.StateStopped && s.finishedAt.IsZero() {
				s.finishedAt = time.Now()
			}
			if s.vm != nil { // not while its create call runs: Pending until it returns
				s.vm = &vm
				changed = append(changed, s)
			}
		}
	}
	for k, s := range p.byKey {
		if !seen[k] && s.vm != nil && !s.deleting && !s.removed {
			// The VM was removed behind the kubelet's back (vm rm).
			s.vm, s.removed = nil, true
			s.createErr = "the pod's VM was removed outside Kubernetes"
			changed = append(changed, s)
		}
	}
	p.mu.Unlock()
	for _, s := range changed {
		p.push(s)
	}
	for _, vm := range orphans {
		log.Printf("banger-kubelet: VM %s belongs to pod %s/%s (uid %s), which no longer exists: removing it", vm.Name, vm.Labels[LabelPodNamespace], vm.Labels[LabelPodName], vm.Labels[LabelPodUID])
		p.removeVM(ctx, vm.Name, "an orphan VM")
	}
	return nil
}

// podExists: is the VM's pod (same UID) still in the API server's view?
// caller holds p.mu (the lister has its own locks).
func (p *Provider) podExists(vm api.VM) bool {
	if p.pods == nil {
		return true // no view: never guess a VM is orphaned
	}
	pod, err := p.pods.Pods(vm.Labels[LabelPodNamespace]).Get(vm.Labels[LabelPodName])
	if apierrors.IsNotFound(err) {
		return false
	}
	if err != nil {
		return true
	}
	return string(pod.UID) == vm.Labels[LabelPodUID]
}

func sameExit(a, b *int) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func parseTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Now()
	}
	return t
}

func (p *Provider) event(pod *corev1.Pod, typ, reason, format string, args ...any) {
	if p.rec != nil {
		p.rec.Eventf(pod, typ, reason, format, args...)
	}
}
