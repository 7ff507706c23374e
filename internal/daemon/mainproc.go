package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"time"

	"banger/api"
	"banger/internal/disk"
	"banger/internal/guestproto"
	"banger/internal/model"
)

// The VM's process settings: init mode, environment and main process.
//
// They are decided once, at create (resolveProcess), and kept on the VM's
// spec. At every boot the guest_setup step pushes them over the agent
// (guestproto.Setup) right after it answers: banger-init keeps the env for
// every session and starts and supervises the main process. The guest
// holds them from then on, so a daemon restart changes nothing; a VM that
// stops gets them again at its next start.
//
// A main process that ends the VM (restart no, or on-failure after exit 0)
// leaves its status on system.cow (guestproto.MainExitPath). markStopped
// reads it back with debugfs once the VMM is gone: bounded (64 bytes) and
// strictly parsed, since the guest wrote it. No timing, no open connection
// needed, and a daemon that was down when the VM stopped still finds it.

// validateProcessParams checks the process fields of a vm.create before
// anything is resolved.
func validateProcessParams(p api.VMCreateParams) error {
	if p.Init != "" {
		if err := guestproto.ValidateInitMode(p.Init); err != nil {
			return api.Errorf(api.KindInvalidArgument, "--init: %v", err)
		}
	}
	if err := guestproto.ValidateRestart(p.Restart); err != nil {
		return api.Errorf(api.KindInvalidArgument, "--restart: %v", err)
	}
	if err := guestproto.ValidateEnv(p.Env); err != nil {
		return api.Errorf(api.KindInvalidArgument, "%v", err)
	}
	if err := guestproto.ValidateWorkdir(p.WorkingDir); err != nil {
		return api.Errorf(api.KindInvalidArgument, "--workdir: %v", err)
	}
	if err := guestproto.ValidateUser(p.User); err != nil {
		return api.Errorf(api.KindInvalidArgument, "--user: %v", err)
	}
	return nil
}

// resolveProcess fills spec.Init, spec.Env and spec.Main from the image
// and the create's overrides.
func (s *VMService) resolveProcess(ctx context.Context, spec *model.VMSpec, p api.VMCreateParams) error {
	img, err := s.d.store.GetImage(ctx, spec.ImageID)
	if err != nil {
		return err
	}
	spec.Init = p.Init
	if spec.Init == "" {
		spec.Init = img.Init
	}
	if spec.Init == "" {
		spec.Init = guestproto.InitAuto
	}
	spec.Env = append(append([]string(nil), img.Config.Env...), p.Env...)
	if err := guestproto.ValidateEnv(spec.Env); err != nil {
		return api.Errorf(api.KindInvalidArgument, "image %q: %v", img.Name, err)
	}
	if spec.Main, err = resolveMain(img.Config, p); err != nil {
		return err
	}
	if p.Restart != "" && p.Restart != guestproto.RestartNo && (spec.Main == nil || spec.Main.Attached) {
		return api.Errorf(api.KindInvalidArgument, "--restart %s: this VM has no main process (the image has no Entrypoint or service Cmd; give one with `-- CMD`)", p.Restart)
	}
	return nil
}

// resolveMain applies the main process rule:
//
//   - `-- CMD` or --entrypoint given: Entrypoint+Cmd with those overrides
//     (a set Entrypoint drops the image's Cmd, as in Docker);
//   - else the image's Entrypoint+Cmd when it has an Entrypoint, or a Cmd
//     that is neither a bare shell (debian's /bin/bash, busybox's /bin/sh:
//     a VM is not a container that should stop when its shell exits) nor
//     an init (such an image wants --init image);
//   - else none: the VM is a plain machine, as before.
//
// For `vm run` (Foreground) the command is Docker's Entrypoint+Cmd
// whatever it is: the caller attaches it to its terminal.
func resolveMain(cfg model.ImageConfig, p api.VMCreateParams) (*model.MainProcess, error) {
	ep, cmd := cfg.Entrypoint, cfg.Cmd
	explicit := len(p.Cmd) > 0 || p.Entrypoint != nil
	if p.Entrypoint != nil {
		ep, cmd = *p.Entrypoint, nil
	}
	if len(p.Cmd) > 0 {
		cmd = p.Cmd
	}
	argv := append(append([]string(nil), ep...), cmd...)
	if len(argv) == 0 {
		if explicit && !p.Foreground {
			return nil, api.Errorf(api.KindInvalidArgument, "the main process is empty: the image has no Cmd for --entrypoint \"\"")
		}
		return nil, nil
	}
	if !explicit && !p.Foreground && (len(ep) == 0 && guestproto.IsShell(cmd) || guestproto.IsInit(argv)) {
		return nil, nil
	}
	m := &model.MainProcess{Argv: argv, WorkingDir: cfg.WorkingDir, User: cfg.User, Restart: p.Restart, Attached: p.Foreground}
	if p.WorkingDir != "" {
		m.WorkingDir = p.WorkingDir
	}
	if p.User != "" {
		m.User = p.User
	}
	if m.Restart == "" {
		m.Restart = guestproto.RestartNo
	}
	gm := guestMain(m)
	if err := gm.Validate(); err != nil {
		return nil, api.Errorf(api.KindInvalidArgument, "%v", err)
	}
	return m, nil
}

func guestMain(m *model.MainProcess) *guestproto.MainProcess {
	return &guestproto.MainProcess{Argv: m.Argv, WorkingDir: m.WorkingDir, User: m.User, Restart: m.Restart}
}

// initModeOf is the KeyInit value for a spec ("" from VMs created before
// init modes: auto).
func initModeOf(spec model.VMSpec) string {
	if spec.Init == "" {
		return guestproto.InitAuto
	}
	return spec.Init
}

// setupTimeout bounds the Setup request (the guest checks the main
// process's user and binary before it answers). In InitImage mode with
// systemd the guest first waits, up to 120 s, for systemd to answer on its
// private socket (cmd/banger-init's waitInitUp: 20–40 s under TCG on a
// loaded host), so this is longer than that.
const setupTimeout = 150 * time.Second

// setupGuest is the guest_setup start step: push the env and the main
// process, learn the init mode the guest resolved.
func (r *startRun) setupGuest(ctx context.Context) error {
	lv := r.s.getLive(r.rec.ID)
	if lv == nil {
		return errors.New("the VM is not live")
	}
	c, err := r.s.agentClient(ctx, r.rec, lv)
	if err != nil {
		return err
	}
	setup := guestproto.Setup{Env: r.rec.Spec.Env}
	if m := r.rec.Spec.Main; m != nil && !m.Attached {
		setup.Main = guestMain(m)
	}
	sctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	reply, err := c.Setup(sctx, setup)
	if err != nil {
		kind := api.KindUnavailable
		if strings.HasPrefix(err.Error(), "guest: ") {
			kind = api.KindInvalidArgument // the guest refused the spec (user, directory, binary)
		}
		return api.Errorf(kind, "set up the guest: %w", err)
	}
	r.rec.Runtime.Init, r.rec.Runtime.InitPath = reply.Init, reply.InitPath
	if r.rec.Spec.Init == guestproto.InitImage && reply.Init != guestproto.InitImage {
		return api.Errorf(api.KindInvalidArgument, "--init image: the image has no executable %s (%q); banger-init stayed PID 1", guestproto.ImageInitPath, reply.InitPath)
	}
	return nil
}

func (r *startRun) setupMessage() string {
	if m := r.rec.Spec.Main; m != nil && !m.Attached {
		return fmt.Sprintf("main process %q, restart %s", m.Argv, m.Restart)
	}
	return "environment"
}

// readMainExit returns the main process's recorded final status, or nil.
// The VMM must have exited (the disk is not in use).
func (s *VMService) readMainExit(ctx context.Context, rec model.VMRecord) *int {
	if rec.Spec.Main == nil || rec.Spec.Main.Attached {
		return nil
	}
	cow := filepath.Join(rec.Runtime.Dir, cowName)
	b, err := disk.ReadSmallFileFromExt4(ctx, cow, guestproto.MainExitPath, guestproto.MaxExitFileBytes)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			s.d.log.Warn("read the main process status", "vm", rec.Name, "err", err)
		}
		return nil
	}
	code, err := guestproto.ParseExitRecord(b)
	if err != nil {
		s.d.log.Warn("main process status", "vm", rec.Name, "err", err)
		return nil
	}
	return &code
}

// execEnv is an exec's env for the agent client: its KEY=VALUE entries plus
// the working directory and user as banger's session settings.
func execEnv(env []string, workdir, user string) (map[string]string, error) {
	if err := guestproto.ValidateEnv(env); err != nil {
		return nil, api.Errorf(api.KindInvalidArgument, "%v", err)
	}
	if err := guestproto.ValidateWorkdir(workdir); err != nil {
		return nil, api.Errorf(api.KindInvalidArgument, "%v", err)
	}
	if err := guestproto.ValidateUser(user); err != nil {
		return nil, api.Errorf(api.KindInvalidArgument, "%v", err)
	}
	m := map[string]string{}
	for _, kv := range env {
		k, v, _ := cutEnv(kv)
		m[k] = v
	}
	if workdir != "" {
		m[guestproto.EnvWorkdir] = workdir
	}
	if user != "" {
		m[guestproto.EnvUser] = user
	}
	return m, nil
}

func cutEnv(kv string) (string, string, bool) {
	for i := 0; i < len(kv); i++ {
		if kv[i] == '=' {
			return kv[:i], kv[i+1:], true
		}
	}
	return kv, "", false
}
