package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"banger/api"
	"banger/internal/agent"
	"banger/internal/guestproto"
	"banger/internal/imagebuild"
	"banger/internal/kernelcat"
	"banger/internal/model"
	"banger/internal/vmm"
)

// Files in a VM's directory.
const (
	cowName        = "system.cow"
	workDiskName   = "root.ext4"
	knownHostsName = "known_hosts"
	consoleTail    = 30
)

// pushKeyTimeout bounds the push to one VM: a guest that never answers
// (its agent replaced by something hostile or wedged) cannot hold a
// rotation, and so every boot waiting on keyUseMu, for longer.
const pushKeyTimeout = 20 * time.Second

// pushKeyTo runs the key update in one VM; keys is the new key, then the
// retired ones, one per line. The user's own lines stay; the daemon's old
// keys go.
func (s *VMService) pushKeyTo(ctx context.Context, rec model.VMRecord, lv *liveVM, keys string) error {
	const script = `set -e; f=/root/.ssh/authorized_keys; mkdir -p /root/.ssh; chmod 700 /root/.ssh; touch "$f"; ` +
		`read -r new; cat > "$f.retired"; grep -vxF -f "$f.retired" "$f" > "$f.new" || true; ` +
		`grep -qxF "$new" "$f.new" || printf '%s\n' "$new" >> "$f.new"; chmod 600 "$f.new"; mv "$f.new" "$f"; rm -f "$f.retired"`
	return s.keyScript(ctx, rec, lv, pushKeyTimeout, script, keys)
}

// keyScript runs a key-maintenance script in the guest with stdin, bounded
// by timeout.
func (s *VMService) keyScript(ctx context.Context, rec model.VMRecord, lv *liveVM, timeout time.Duration, script, stdin string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := s.agentClient(ctx, rec, lv)
	if err != nil {
		return err
	}
	// Opening a session has no context: closing the client is what
	// unblocks a guest that accepts the channel and never answers.
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	var errb strings.Builder
	code, err := c.Exec(ctx, script, nil, strings.NewReader(stdin), nil, &errb)
	if ctx.Err() != nil {
		return fmt.Errorf("no answer within %s: %w", timeout, ctx.Err())
	}
	if err == nil && code != 0 {
		err = fmt.Errorf("exit %d: %s", code, strings.TrimSpace(errb.String()))
	}
	return err
}

// pushKey authorizes pub in every running VM over its agent connection
// (authenticated with the current key). It returns the VMs it could not
// reach; they get the key at their next start.
func (s *VMService) pushKey(ctx context.Context, op *operation, pub []byte) []string {
	s.liveMu.Lock()
	ids := make([]string, 0, len(s.live))
	for id := range s.live {
		ids = append(ids, id)
	}
	s.liveMu.Unlock()
	_, oldPub := s.d.keys.current()
	in := strings.TrimSpace(string(pub)) + "\n"
	for _, r := range append(s.d.keys.retired(), oldPub) {
		in += strings.TrimSpace(string(r)) + "\n"
	}
	// In parallel (at most pushKeyParallel at once): the rotation holds
	// keyUseMu, so creates wait for it, and guests that never answer
	// must cost one pushKeyTimeout, not one each.
	var (
		mu     sync.Mutex
		wg     sync.WaitGroup
		sem    = make(chan struct{}, pushKeyParallel)
		failed = []string{}
	)
	fail := func(name string) { mu.Lock(); failed = append(failed, name); mu.Unlock() }
	for _, id := range ids {
		rec, err := s.d.store.GetVM(ctx, id)
		lv := s.getLive(id)
		if err != nil || lv == nil {
			continue
		}
		if rec.State == model.StatePaused {
			// It cannot answer; it gets the key at its next start.
			fail(rec.Name)
			continue
		}
		op.stage("push_key", rec.Name)
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := s.pushKeyTo(ctx, rec, lv, in); err != nil {
				op.log.Warn("push new key", "vm", rec.Name, "err", err)
				fail(rec.Name)
			}
		}()
	}
	wg.Wait()
	sort.Strings(failed)
	return failed
}

// pushKeyParallel bounds the concurrent key pushes of a rotation.
const pushKeyParallel = 8

// liveVM is a VM whose VMM this daemon started or adopted.
type liveVM struct {
	handle vmm.Handle
	done   chan struct{} // closed when the monitor saw the VMM exit

	mu    sync.Mutex // guards agent
	agent *agent.Client
}

// resolveImage is phase 1 of create: find (or auto-pull) the image and its
// kernel. No global lock is held; per-name pull locks serialize pulls.
func (s *VMService) resolveImage(ctx context.Context, op *operation, spec *model.VMSpec) error {
	img, err := s.d.images.findOrAutoPullImage(ctx, spec.Image)
	if err != nil {
		return err
	}
	spec.ImageID = img.ID
	spec.Image = img.Name
	if spec.Kernel == "" {
		spec.Kernel = s.d.defaultKernel(img.Kernel)
	}
	op.stage("resolve_kernel", spec.Kernel)
	_, err = s.d.kernels.readOrAutoPullKernel(ctx, spec.Kernel)
	return err
}

// defaultKernel picks the kernel for an image whose VM named none: the
// image's own, or the catalog default, which the config's default_kernel,
// else the driver (Capabilities.DefaultKernel: one it can boot), else the
// built kernel once this host has it (builtKernelPulled) may replace.
func (d *Daemon) defaultKernel(imageKernel string) string {
	if imageKernel == "" {
		imageKernel = kernelcat.DefaultKernel
	}
	if imageKernel != kernelcat.DefaultKernel {
		return imageKernel
	}
	if d.cfg.DefaultKernel != "" {
		return d.cfg.DefaultKernel
	}
	if d.driver != nil {
		if k := d.driver.Capabilities().DefaultKernel; k != "" {
			return k
		}
	}
	if d.builtKernelPulled() {
		return builtKernel
	}
	return imageKernel
}

// builtKernelPulled: the built kernel is in this daemon's kernels dir. It
// boots faster and passes the whole smoke suite, but building it takes
// minutes (~14 on a 2-core box), so it becomes the default once someone
// has pulled it here rather than on a first `vm run`, which the cloud
// kernel (an apt download) keeps fast.
func (d *Daemon) builtKernelPulled() bool {
	if d.kernels == nil {
		return false
	}
	_, err := os.Stat(filepath.Join(kernelcat.Dir(d.kernels.dir, builtKernel), kernelcat.ManifestFile))
	return err == nil
}

// vmRuntimeDir is a short per-VM socket dir (unix socket paths are capped
// at 107 bytes).
func (s *VMService) vmRuntimeDir(id string) string {
	return filepath.Join(s.d.cfg.RuntimeDir, s.d.names.VMRunDir, id[:12])
}

// prepareDisks makes system.cow (formatted ext4, sparse) and root.ext4
// (from the image's work seed) unless they exist from an earlier boot,
// both at once, each a clone of a template built once (disktmpl.go).
func (s *VMService) prepareDisks(ctx context.Context, rec *model.VMRecord, img model.Image) error {
	dir := rec.Runtime.Dir
	cow, work := filepath.Join(dir, cowName), filepath.Join(dir, workDiskName)
	cowErr := make(chan error, 1)
	go func() {
		if _, err := os.Stat(cow); !os.IsNotExist(err) {
			cowErr <- nil
			return
		}
		tmpl, err := s.cowTemplate(ctx, rec.Spec.SystemOverlaySize)
		if err == nil {
			err = cloneInto(tmpl, cow)
		}
		if err != nil {
			err = fmt.Errorf("create system overlay: %w", err)
		}
		cowErr <- err
	}()
	var err error
	if _, serr := os.Stat(work); os.IsNotExist(serr) {
		err = s.materializeWork(ctx, img, work, rec.Spec.WorkDiskSize)
	} else {
		err = s.ensureAuthorizedKeyOnWorkDisk(ctx, work, rec.Spec.UserKeys)
	}
	return errors.Join(err, <-cowErr)
}

// materializeWork makes a new VM's work disk: a clone of the image's
// work template of that size, after the seed got the daemon's key.
func (s *VMService) materializeWork(ctx context.Context, img model.Image, work string, size int64) error {
	img, err := s.d.images.ensureSeedKey(ctx, img)
	if err != nil {
		return err
	}
	tmpl, err := s.workTemplate(ctx, img, size)
	if err == nil {
		err = cloneInto(tmpl, work)
	}
	if err != nil {
		return fmt.Errorf("create work disk: %w", err)
	}
	return nil
}

// ensureAuthorizedKeyOnWorkDisk adds the daemon's current key to an
// existing work disk that lacks it (the key was rotated since the VM was
// created), and the owner's recorded CLI keys (authorizeUserKey), which a
// guest-mangled authorized_keys that was set aside unread lost. The
// user's other keys stay.
func (s *VMService) ensureAuthorizedKeyOnWorkDisk(ctx context.Context, work string, userKeys []string) error {
	_, pub := s.d.keys.current()
	if _, err := imagebuild.AddAuthorizedKey(ctx, work, pub, s.d.keys.retired()); err != nil {
		return fmt.Errorf("authorize the daemon's key on the work disk: %w", err)
	}
	for _, k := range userKeys {
		if _, err := imagebuild.AddAuthorizedKey(ctx, work, []byte(k), nil); err != nil {
			return fmt.Errorf("authorize the owner's key on the work disk: %w", err)
		}
	}
	return nil
}

// waitReady polls the agent until it answers, the VMM exits, or the
// readiness timeout passes. Each attempt may take up to agentAttempt: the
// sync line repeats until the guest answers, and an SSH handshake on a
// loaded TCG guest can take seconds, so short attempts would abort
// handshakes that were about to succeed (and each abort leaves the guest
// mid-handshake, to be resynchronized again).
func (s *VMService) waitReady(parent context.Context, rec model.VMRecord, h vmm.Handle) (*agent.Client, error) {
	timeout := s.d.cfg.readyTimeout()
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	var exitErr error
	exited := make(chan struct{})
	go func() {
		err := h.Wait(ctx)
		if ctx.Err() == nil {
			exitErr = err
			close(exited)
			cancel() // ends the attempt in flight
		}
	}()
	var last error
	for {
		actx, acancel := context.WithTimeout(ctx, agentAttempt)
		c, err := s.dialAgent(actx, rec, h)
		if err == nil {
			if err = c.Ping(actx); err == nil {
				acancel()
				return c, nil
			}
			c.Close()
		}
		acancel()
		last = err
		select {
		case <-exited:
			return nil, fmt.Errorf("the VMM exited before the guest was ready (%v)", exitErr)
		case <-ctx.Done():
			select {
			case <-exited:
				return nil, fmt.Errorf("the VMM exited before the guest was ready (%v)", exitErr)
			default:
			}
			if err := callerGone(parent); err != nil {
				return nil, err
			}
			return nil, fmt.Errorf("not ready after %s (last agent error: %v)", timeout, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// agentAttempt bounds one agent dial + handshake + ping.
const agentAttempt = 30 * time.Second

func (s *VMService) dialAgent(ctx context.Context, rec model.VMRecord, h vmm.Handle) (*agent.Client, error) {
	conn, err := h.AgentConn(ctx)
	if err != nil {
		return nil, err
	}
	signer, _ := s.d.keys.current()
	c, err := agent.Dial(ctx, conn, signer, agent.TOFU(filepath.Join(rec.Runtime.Dir, knownHostsName), rec.Name, rec.Runtime.GuestIP, rec.DNSName()))
	if err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

func (s *VMService) setLive(id string, lv *liveVM) {
	s.liveMu.Lock()
	defer s.liveMu.Unlock()
	if s.live == nil {
		s.live = map[string]*liveVM{}
	}
	s.live[id] = lv
}

func (s *VMService) getLive(id string) *liveVM {
	s.liveMu.Lock()
	defer s.liveMu.Unlock()
	return s.live[id]
}

func (s *VMService) dropLive(id string, lv *liveVM) {
	s.liveMu.Lock()
	defer s.liveMu.Unlock()
	if s.live[id] == lv {
		delete(s.live, id)
	}
}

// watch registers lv as id's running VMM and starts its monitor.
func (s *VMService) watch(id string, lv *liveVM) {
	s.setLive(id, lv)
	s.d.monitors.Add(1)
	go func() {
		defer s.d.monitors.Done()
		s.monitor(id, lv)
	}()
}

// monitor notices a VMM that exits on its own (guest poweroff, crash,
// kill -9) and marks the VM stopped, releasing its host resources. It
// returns without touching anything when the daemon closes first.
func (s *VMService) monitor(id string, lv *liveVM) {
	lv.handle.Wait(s.d.bg)
	if s.d.bg.Err() != nil {
		return
	}
	close(lv.done)
	unlock, err := s.vmLocks.Lock(s.d.bg, id)
	if err != nil {
		return
	}
	defer unlock()
	// Close waits for this monitor, so the store is still open; finish
	// the bookkeeping even if the daemon starts closing meanwhile.
	ctx := context.Background()
	if s.getLive(id) != lv {
		return // stopLocked already handled it
	}
	s.dropLive(id, lv)
	lv.closeAgent()
	rec, err := s.d.store.GetVM(ctx, id)
	if err != nil {
		return
	}
	s.d.log.Info("VMM exited", "vm", rec.Name, "vm_id", id, "pid", rec.Runtime.PID)
	s.d.vmEvent("die", rec, nil)
	if _, err := s.markStopped(ctx, rec); err != nil {
		s.d.log.Warn("record VMM exit", "vm", rec.Name, "err", err)
	}
}

// closeAgents closes every live VM's agent connection (daemon shutdown).
func (s *VMService) closeAgents() {
	s.liveMu.Lock()
	lvs := make([]*liveVM, 0, len(s.live))
	for _, lv := range s.live {
		lvs = append(lvs, lv)
	}
	s.liveMu.Unlock()
	for _, lv := range lvs {
		lv.closeAgent()
	}
}

func (lv *liveVM) closeAgent() {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	if lv.agent != nil {
		lv.agent.Close()
		lv.agent = nil
	}
}

// markStopped releases host resources and records the VM as stopped.
//
// caller holds s.vmLocks[rec.ID] (reconcile runs before any RPC is served,
// so it needs none).
func (s *VMService) markStopped(ctx context.Context, rec model.VMRecord) (model.VMRecord, error) {
	var errs []error
	if rec.Runtime.Tap != "" {
		s.d.net.vmDown(ctx, rec)
		if err := s.d.net.detach(rec); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(s.vmRuntimeDir(rec.ID)); err != nil {
		errs = append(errs, err)
	}
	rec.State = model.StateStopped
	rec.Runtime.MainExit = s.readMainExit(ctx, rec) // the VMM is gone: mainproc.go
	rec.Runtime.PID, rec.Runtime.VMMState, rec.Runtime.Tap = 0, nil, ""
	if err := s.d.store.UpdateVM(ctx, rec); err != nil {
		errs = append(errs, fmt.Errorf("record state stopped: %w", err))
	}
	s.d.saveManifest(rec)
	return rec, errors.Join(errs...)
}

// stopLocked stops a VM. Graceful: ask banger-init to power off (it syncs
// and unmounts the work disk), wait, then let the driver stop or kill the
// VMM. force kills at once.
//
// caller holds s.vmLocks[rec.ID].
func (s *VMService) stopLocked(ctx context.Context, op *operation, rec model.VMRecord, force bool) (model.VMRecord, error) {
	lv := s.getLive(rec.ID)
	if lv == nil {
		if isActive(rec.State) || rec.State == model.StateError {
			return s.markStopped(ctx, rec)
		}
		return rec, nil
	}
	if rec.State == model.StatePaused && !force {
		// A paused guest cannot power itself off: run it again for the
		// graceful path (a failed resume ends in the driver's stop/kill).
		if sn, err := s.snapshotter(lv); err == nil {
			rctx, cancel := context.WithTimeout(ctx, pauseTimeout)
			if err := sn.Resume(rctx); err != nil {
				op.log.Warn("resume a paused VM to stop it", "vm", rec.Name, "err", err)
			}
			cancel()
		}
	}
	rec.State = model.StateStopping
	if err := s.d.store.UpdateVM(ctx, rec); err != nil {
		return rec, fmt.Errorf("record state stopping: %w", err)
	}
	var errs []error
	if force {
		if err := lv.handle.Kill(); err != nil {
			errs = append(errs, fmt.Errorf("kill the VMM: %w", err))
		}
	} else {
		graceful := false
		if c, err := s.agentClient(ctx, rec, lv); err == nil {
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			graceful = c.Poweroff(pctx) == nil
			cancel()
		}
		if graceful {
			wctx, cancel := context.WithTimeout(ctx, poweroffWait(rec))
			lv.handle.Wait(wctx)
			cancel()
		}
		if err := lv.handle.Stop(ctx); err != nil {
			if kerr := lv.handle.Kill(); kerr != nil {
				errs = append(errs, fmt.Errorf("stop the VMM: %w; then kill: %w", err, kerr))
			}
		}
	}
	s.dropLive(rec.ID, lv)
	lv.closeAgent()
	rec, err := s.markStopped(ctx, rec)
	s.d.vmEvent("stop", rec, stopAttrs(ctx))
	return rec, errors.Join(append(errs, err)...)
}

// poweroffWait is how long a graceful stop waits for the guest to power
// itself off before the driver's stop (ACPI power button, then quit). The
// image's own init stops its services first: systemd gives each up to 90 s
// (DefaultTimeoutStopSec), and under TCG a systemd guest with dockerd took
// 15–40 s to power off, more than banger-init's 30 s allowance.
func poweroffWait(rec model.VMRecord) time.Duration {
	if rec.Runtime.Init == guestproto.InitImage {
		return 120 * time.Second
	}
	return 30 * time.Second
}

// agentClient returns the VM's agent connection, re-dialing it if it broke
// (or after a daemon restart, when only the handle was adopted).
func (s *VMService) agentClient(ctx context.Context, rec model.VMRecord, lv *liveVM) (*agent.Client, error) {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	if lv.agent != nil {
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := lv.agent.Ping(pctx)
		cancel()
		if err == nil {
			return lv.agent, nil
		}
		lv.agent.Close()
		lv.agent = nil
	}
	dctx, cancel := context.WithTimeout(ctx, agentAttempt)
	defer cancel()
	c, err := s.dialAgent(dctx, rec, lv.handle)
	if err != nil {
		return nil, api.Errorf(api.KindUnavailable, "cannot reach the agent of VM %q: %w", rec.Name, err)
	}
	lv.agent = c
	return c, nil
}

// driverFor returns the hypervisor selected at startup.
func (d *Daemon) driverFor() (vmm.Driver, error) {
	if d.driver == nil {
		return nil, api.Errorf(api.KindUnavailable, "no hypervisor usable on this host: %s (run `banger doctor`)", d.driverWhy)
	}
	return d.driver, nil
}
