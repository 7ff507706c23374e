package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"

	"banger/api"
	"banger/internal/model"
	"banger/internal/vmm"
)

// withVM runs fn under the VM's lock with a fresh record.
func (s *VMService) withVM(ctx context.Context, name string, fn func(rec model.VMRecord) (model.VMRecord, error)) (model.VMRecord, error) {
	rec, err := s.find(ctx, name)
	if err != nil {
		return rec, err
	}
	unlock, err := s.vmLocks.Lock(ctx, rec.ID)
	if err != nil {
		return rec, err
	}
	defer unlock()
	if rec, err = s.d.store.GetVM(ctx, rec.ID); err != nil {
		return rec, api.Errorf(api.KindNotFound, "VM %q was removed meanwhile", name)
	}
	return fn(rec)
}

// StartVM boots a stopped VM.
func (s *VMService) StartVM(ctx context.Context, name string) (model.VMRecord, error) {
	return s.withVM(ctx, name, func(rec model.VMRecord) (model.VMRecord, error) {
		op := s.d.beginOperation(ctx, "vm.start", "vm_id", rec.ID, "vm", rec.Name)
		rec, err := s.startLocked(ctx, op, rec)
		if err != nil {
			return rec, op.fail(err)
		}
		op.done()
		return rec, nil
	})
}

// StopVM stops a running VM (force: kill the VMM at once).
func (s *VMService) StopVM(ctx context.Context, name string, force bool) (model.VMRecord, error) {
	return s.withVM(ctx, name, func(rec model.VMRecord) (model.VMRecord, error) {
		if !isActive(rec.State) && rec.State != model.StateError {
			return rec, api.Errorf(api.KindConflict, "VM %q is not running (state %s)", rec.Name, rec.State)
		}
		op := s.d.beginOperation(ctx, "vm.stop", "vm_id", rec.ID, "vm", rec.Name, "force", force)
		op.stage("stop", rec.Name)
		rec, err := s.stopLocked(ctx, op, rec, force)
		if err != nil {
			return rec, op.fail(err)
		}
		op.done()
		return rec, nil
	})
}

// RestartVM stops (if running) and starts a VM.
func (s *VMService) RestartVM(ctx context.Context, name string) (model.VMRecord, error) {
	return s.withVM(ctx, name, func(rec model.VMRecord) (model.VMRecord, error) {
		op := s.d.beginOperation(ctx, "vm.restart", "vm_id", rec.ID, "vm", rec.Name)
		var err error
		if isActive(rec.State) {
			op.stage("stop", rec.Name)
			if rec, err = s.stopLocked(ctx, op, rec, false); err != nil {
				return rec, op.fail(err)
			}
		}
		if rec, err = s.startLocked(ctx, op, rec); err != nil {
			return rec, op.fail(err)
		}
		op.done()
		return rec, nil
	})
}

// runningAgent returns a running VM's record and live handle.
func (s *VMService) runningVM(ctx context.Context, name string) (model.VMRecord, *liveVM, error) {
	rec, err := s.find(ctx, name)
	if err != nil {
		return rec, nil, err
	}
	lv := s.getLive(rec.ID)
	if err := notRunningErr(rec, lv); err != nil {
		return rec, nil, err
	}
	return rec, lv, nil
}

// notRunningErr is the conflict error of a guest operation (exec, ssh,
// key push) on a VM whose guest does not run, naming the command that
// fixes it; nil for a running VM.
func notRunningErr(rec model.VMRecord, lv *liveVM) error {
	switch {
	case rec.State == model.StatePaused:
		return api.Errorf(api.KindConflict, "VM %q is paused: `banger vm resume %s` first", rec.Name, rec.Name)
	case rec.State != model.StateRunning || lv == nil:
		return api.Errorf(api.KindConflict, "VM %q is not running (state %s): `banger vm start %s`", rec.Name, rec.State, rec.Name)
	}
	return nil
}

// Exec runs a command in the guest over the agent channel and returns its
// output (for SDK callers; the CLI streams through vm.proxy instead).
func (s *VMService) Exec(ctx context.Context, p api.ExecParams) (api.ExecResult, error) {
	if len(p.Cmd) == 0 {
		return api.ExecResult{}, api.Errorf(api.KindInvalidArgument, "vm.exec: cmd is empty")
	}
	rec, lv, err := s.runningVM(ctx, p.Name)
	if err != nil {
		return api.ExecResult{}, err
	}
	defer s.idle.begin(rec.ID)() // idle.go: not idle while it runs
	c, err := s.agentClient(ctx, rec, lv)
	if err != nil {
		return api.ExecResult{}, err
	}
	env, err := execEnv(p.Env, p.WorkingDir, p.User) // mainproc.go
	if err != nil {
		return api.ExecResult{}, err
	}
	// Output is collected for the reply, at most MaxExecOutput a stream:
	// past it the command is stopped (the session closed) and the call
	// fails saying so.
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	out := &capBuffer{max: MaxExecOutput, onFull: stop}
	errb := &capBuffer{max: MaxExecOutput, onFull: stop}
	code, err := c.Exec(runCtx, shellJoin(p.Cmd), env, strings.NewReader(p.Stdin), out, errb)
	if out.isFull() || errb.isFull() {
		return api.ExecResult{}, api.Errorf(api.KindInvalidArgument, "exec in %q: the command wrote more than %d MiB to stdout or stderr, the most vm.exec returns: it was stopped; "+
			"use `banger vm exec` (which streams) or redirect the output to a file in the guest", rec.Name, MaxExecOutput>>20)
	}
	if err != nil {
		return api.ExecResult{}, api.Errorf(api.KindUnavailable, "exec in %q: %v", rec.Name, err)
	}
	return api.ExecResult{ExitCode: code, Stdout: out.String(), Stderr: errb.String()}, nil
}

// shellJoin quotes argv for `sh -c`.
func shellJoin(argv []string) string {
	if len(argv) == 1 {
		return argv[0] // a single string is a shell command line, like ssh
	}
	q := make([]string, len(argv))
	for i, a := range argv {
		if a != "" && strings.IndexFunc(a, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,@%+", r))
		}) < 0 {
			q[i] = a
			continue
		}
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// Logs returns the console log from offset.
func (s *VMService) Logs(ctx context.Context, p api.LogsParams) (api.LogsResult, error) {
	rec, err := s.find(ctx, p.Name)
	if err != nil {
		return api.LogsResult{}, err
	}
	// Logical offsets: the console log rotates (vmm.ConsoleLog).
	b, off, err := vmm.ReadConsole(filepath.Join(rec.Runtime.Dir, "console.log"), p.Offset, 4<<20)
	if err != nil {
		return api.LogsResult{}, err
	}
	return api.LogsResult{Data: string(b), Offset: off, State: string(rec.State)}, nil
}

// Prune removes every stopped (or failed) VM.
func (s *VMService) Prune(ctx context.Context) (api.VMPruneResult, error) {
	recs, err := s.d.store.ListVMs(ctx)
	if err != nil {
		return api.VMPruneResult{}, err
	}
	res := api.VMPruneResult{Removed: []string{}}
	for _, r := range recs {
		if isActive(r.State) || !owns(ctx, r) {
			continue
		}
		if _, err := s.DeleteVM(ctx, r.Name, false, false); err == nil {
			res.Removed = append(res.Removed, r.Name)
		}
	}
	return res, nil
}

// proxy pipes an RPC connection to the guest's SSH server (TCP 22 inside
// the guest, reached as a direct-tcpip channel over the agent), so `vm
// exec` and `vm ssh` work from any network namespace through the socket.
func (s *VMService) proxy(ctx context.Context, raw json.RawMessage) (func(io.ReadWriteCloser), error) {
	var p api.NameParams
	if err := decode(raw, &p); err != nil {
		return nil, err
	}
	rec, lv, err := s.runningVM(ctx, p.Name)
	if err != nil {
		return nil, err
	}
	c, err := s.agentClient(ctx, rec, lv)
	if err != nil {
		return nil, err
	}
	guest, err := c.SSH().Dial("tcp", "127.0.0.1:22")
	if err != nil {
		return nil, api.Errorf(api.KindUnavailable, "open a channel to the SSH server of %q: %v", rec.Name, err)
	}
	end := s.idle.begin(rec.ID) // idle.go: vm exec/ssh/cp hold this open
	return func(client io.ReadWriteCloser) {
		defer end()
		defer guest.Close()
		defer client.Close()
		done := make(chan struct{}, 2)
		go func() { io.Copy(guest, client); closeWrite(guest); done <- struct{}{} }()
		go func() { io.Copy(client, guest); done <- struct{}{} }()
		<-done
		<-done
	}, nil
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

func (s *VMService) sshInfo(ctx context.Context, p api.SSHInfoParams) (api.SSHInfo, error) {
	rec, err := s.find(ctx, p.Name)
	if err != nil {
		return api.SSHInfo{}, err
	}
	if p.PublicKey != "" {
		if rec, err = s.authorizeUserKey(ctx, rec, p.PublicKey); err != nil {
			return api.SSHInfo{}, err
		}
	}
	s.idle.touch(rec.ID) // an ssh through ssh-config asks first
	kh := filepath.Join(rec.Runtime.Dir, knownHostsName)
	info := api.SSHInfo{Name: rec.Name, GuestIP: rec.Runtime.GuestIP}
	// The daemon wrote this file from the agent's first handshake; it is
	// small, and read bounded all the same.
	if f, err := os.Open(kh); err == nil {
		b, _ := io.ReadAll(io.LimitReader(f, 64<<10))
		f.Close()
		info.HostKeys = string(b)
	}
	if callerOf(ctx).root() {
		info.KeyPath, info.KnownHosts = s.d.keys.privPath(), kh
	}
	return info, nil
}

// reconcile runs at daemon start: re-adopt live VMMs, mark dead ones
// stopped, remove orphan taps, NAT members and runtime dirs.
func (s *VMService) reconcile(ctx context.Context) error {
	recs, err := s.d.store.ListVMs(ctx)
	if err != nil {
		return err
	}
	s.cleanSnapshotTemps() // snapshots.go
	running := s.adoptRunning(ctx, recs)
	s.republish(ctx, running)
	s.d.net.reconcile(ctx, running)
	s.killOrphanVMMs(running)
	s.cleanOrphanDirs(recs, running)
	return nil
}

// adoptRunning re-attaches to the VMMs of active records and marks the
// others stopped; it returns the running VMs by id.
func (s *VMService) adoptRunning(ctx context.Context, recs []model.VMRecord) map[string]model.VMRecord {
	running := map[string]model.VMRecord{}
	for _, rec := range recs {
		if !isActive(rec.State) {
			continue
		}
		h, err := s.adopt(rec)
		if err != nil {
			s.d.log.Info("VM not running after restart; marking stopped", "vm", rec.Name, "why", err)
			if _, err := s.markStopped(ctx, rec); err != nil {
				s.d.log.Warn("mark stopped", "vm", rec.Name, "err", err)
			}
			continue
		}
		lv := &liveVM{handle: h, done: make(chan struct{})}
		if st := s.adoptedState(ctx, rec, h); st != rec.State {
			rec.State = st
			if err := s.d.store.UpdateVM(ctx, rec); err != nil {
				s.d.log.Warn("record state "+string(st), "vm", rec.Name, "err", err)
			}
		}
		s.watch(rec.ID, lv)
		// The guest ran unsynced while no daemon was there: set its clock
		// now (dialing the agent), then every clockSyncInterval.
		s.keepClock(rec.ID, lv, true)
		running[rec.ID] = rec
		s.d.log.Info("re-adopted running VM", "vm", rec.Name, "pid", h.PID())
	}
	return running
}

// republish rebuilds the host network of adopted VMs. Only VMs that have a
// tap have any: the VMs of a driver without guest network need no bridge,
// nftables or vmdns, so adopting them must not create any (nor need root).
func (s *VMService) republish(ctx context.Context, running map[string]model.VMRecord) {
	var tapped []model.VMRecord
	for _, rec := range running {
		if rec.Runtime.Tap != "" {
			tapped = append(tapped, rec)
		}
	}
	if len(tapped) == 0 {
		return
	}
	if err := s.d.net.ensure(); err != nil {
		s.d.log.Warn("network after restart", "err", err)
	}
	for _, rec := range tapped {
		if len(rec.Spec.Ports) > 0 {
			if err := s.d.net.fwd.Reserve(rec.Name, forwardsOf(rec)); err != nil {
				s.d.log.Warn("port forwards after restart", "vm", rec.Name, "err", err)
			}
		}
		if err := s.d.net.vmUp(ctx, rec); err != nil {
			s.d.log.Warn("publish VM after restart", "vm", rec.Name, "err", err)
		}
	}
}

// cleanOrphanDirs removes the runtime dirs of VMs that are not running and
// moves VM dirs without a row (the daemon died between delete and
// RemoveAll, or rows were lost) to lost+found: kept, never deleted.
func (s *VMService) cleanOrphanDirs(recs []model.VMRecord, running map[string]model.VMRecord) {
	runRoot := filepath.Join(s.d.cfg.RuntimeDir, s.d.names.VMRunDir) // this instance's only
	entries, _ := os.ReadDir(runRoot)
	keep := map[string]bool{}
	for id := range running {
		keep[id[:12]] = true
	}
	for _, e := range entries {
		if !keep[e.Name()] {
			os.RemoveAll(filepath.Join(runRoot, e.Name()))
		}
	}
	vmDirs, _ := os.ReadDir(filepath.Join(s.d.cfg.StateDir, "vms"))
	rows := map[string]bool{}
	for _, r := range recs {
		rows[r.ID] = true
	}
	for _, e := range vmDirs {
		if !rows[e.Name()] && !strings.HasPrefix(e.Name(), ".") {
			if err := s.d.moveToLostFound("vm", filepath.Join(s.d.cfg.StateDir, "vms", e.Name())); err != nil {
				s.d.log.Warn("orphan VM directory", "err", err)
			}
		}
	}
}

func (s *VMService) adopt(rec model.VMRecord) (vmm.Handle, error) {
	if len(rec.Runtime.VMMState) == 0 {
		return nil, errors.New("no VMM state recorded")
	}
	var st vmm.StateInfo
	if err := json.Unmarshal(rec.Runtime.VMMState, &st); err != nil {
		return nil, err
	}
	for _, d := range s.d.drivers {
		if d.Name() == st.Driver {
			return d.Adopt(st)
		}
	}
	return nil, errors.New("unknown driver " + st.Driver)
}

// killOrphanVMMs kills VMM processes started for this state dir's VMs that
// no record claims (e.g. a daemon died between spawn and persisting). A
// VMM is this instance's when a path under its VM runtime dir (named per
// state dir, internal/instance) starts one of its arguments or follows a
// '=', ',' or ':' in one: a substring match would also take the VMMs of a
// daemon whose runtime dir merely ends with ours ("/x/run/banger").
func (s *VMService) killOrphanVMMs(running map[string]model.VMRecord) {
	marker := filepath.Join(s.d.cfg.RuntimeDir, s.d.names.VMRunDir) + "/"
	pids := map[int]bool{}
	for _, r := range running {
		pids[r.Runtime.PID] = true
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid := atoiOr(p.Name(), -1)
		if pid <= 0 || pids[pid] {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err != nil || !cmdlineHasPath(cmd, marker) {
			continue
		}
		if proc, err := os.FindProcess(pid); err == nil {
			s.d.log.Info("killing orphan VMM", "pid", pid)
			proc.Kill()
		}
	}
}

// cmdlineHasPath says whether a /proc cmdline (NUL-separated arguments)
// names a path under dir (which ends in '/') as a whole path.
func cmdlineHasPath(cmdline []byte, dir string) bool {
	for _, arg := range bytes.Split(cmdline, []byte{0}) {
		for i := 0; ; {
			j := bytes.Index(arg[i:], []byte(dir))
			if j < 0 {
				break
			}
			j += i
			if j == 0 || bytes.IndexByte([]byte("=,:"), arg[j-1]) >= 0 {
				return true
			}
			i = j + 1
		}
	}
	return false
}

func atoiOr(s string, def int) int {
	n := 0
	if s == "" {
		return def
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return def
		}
		n = n*10 + int(c-'0')
	}
	return n
}
