package daemon

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"banger/api"
	"banger/internal/agent"
	"banger/internal/guestcp"
	"banger/internal/model"
)

// First-boot provisioning (`vm create --provision FILE --copy HOST:GUEST`).
//
// The CLI reads the files with its user's rights and sends their contents
// in vm.create; the daemon keeps them in <vm dir>/provision/ and runs them
// in the start step "provision", after wait_ready and publish (the guest's
// network, NAT and DNS are up): the copies are extracted at / over SFTP,
// then each script runs as root in order. The VM record says the
// provisioning began before the first script runs, so it never runs twice
// (not after a stop/start, not after a daemon crash mid-way). A script that
// fails fails the start: its last lines are in the error, the VM is left in
// state error, and its whole output is on the console (`vm logs`).

const (
	provisionDir     = "provision"
	provisionCopyTar = "copy.tar"
	// guestProvisionDir is where the scripts are put in the guest (a tmpfs).
	guestProvisionDir = "/run/banger/provision"
	// provisionTailLines is how much of a failed script's output the error
	// carries.
	provisionTailLines = 20
)

// checkProvision validates the provisioning of a vm.create and returns
// its spec (nil for none). Any RPC caller lands here, not only the CLI.
func checkProvision(p api.VMCreateParams) (*model.ProvisionSpec, error) {
	if len(p.Provision) == 0 && len(p.CopyTar) == 0 {
		return nil, nil
	}
	if len(p.Provision) > model.MaxProvisionScripts {
		return nil, api.Errorf(api.KindInvalidArgument, "%d provisioning scripts: at most %d", len(p.Provision), model.MaxProvisionScripts)
	}
	total := len(p.CopyTar)
	spec := &model.ProvisionSpec{Copy: len(p.CopyTar) > 0}
	for i, s := range p.Provision {
		if len(s.Script) == 0 {
			return nil, api.Errorf(api.KindInvalidArgument, "provisioning script %q is empty", s.Name)
		}
		total += len(s.Script)
		spec.Scripts = append(spec.Scripts, fmt.Sprintf("%02d-%s", i+1, safeScriptName(s.Name)))
	}
	if total > model.MaxProvisionBytes {
		return nil, api.Errorf(api.KindInvalidArgument, "provisioning files are %d bytes: at most %d in all (copy larger trees with `banger vm cp` after the create)", total, model.MaxProvisionBytes)
	}
	return spec, nil
}

// safeScriptName keeps a script's base name readable and harmless as a
// file name.
func safeScriptName(name string) string {
	name = path.Base(name)
	b := []byte(name)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			b[i] = '_'
		}
	}
	if s := strings.Trim(string(b), "."); s != "" && len(s) <= 64 {
		return s
	} else if len(s) > 64 {
		return s[:64]
	}
	return "script"
}

// saveProvision writes a new VM's provisioning files into its directory
// (caller: CreateVM, right after the reservation).
func (s *VMService) saveProvision(rec model.VMRecord, p api.VMCreateParams) error {
	spec := rec.Spec.Provision
	if spec == nil {
		return nil
	}
	dir := filepath.Join(rec.Runtime.Dir, provisionDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save provisioning files: %w", err)
	}
	for i, name := range spec.Scripts {
		if err := os.WriteFile(filepath.Join(dir, name), p.Provision[i].Script, 0o600); err != nil {
			return fmt.Errorf("save provisioning script: %w", err)
		}
	}
	if spec.Copy {
		if err := os.WriteFile(filepath.Join(dir, provisionCopyTar), p.CopyTar, 0o600); err != nil {
			return fmt.Errorf("save provisioning copies: %w", err)
		}
	}
	return nil
}

func (r *startRun) provisionMsg() string {
	spec := r.rec.Spec.Provision
	msg := fmt.Sprintf("%d script(s)", len(spec.Scripts))
	if spec.Copy {
		msg = "copies, " + msg
	}
	return msg
}

// noProvision: nothing to provision, or it already began once.
func (r *startRun) noProvision() bool {
	return r.rec.Spec.Provision == nil || r.rec.Runtime.ProvisionState != ""
}

// provision is the start step: copies, then scripts. A failure's state is
// recorded by fail (r.rec carries ProvisionFailed).
func (r *startRun) provision(ctx context.Context) error {
	r.rec.Runtime.ProvisionState = model.ProvisionRunning
	if err := r.s.d.store.UpdateVM(ctx, r.rec); err != nil {
		return fmt.Errorf("record provisioning: %w", err)
	}
	if err := r.runProvision(ctx); err != nil {
		r.rec.Runtime.ProvisionState = model.ProvisionFailed
		return err
	}
	r.rec.Runtime.ProvisionState = model.ProvisionDone
	r.rec.Runtime.ProvisionedAt = time.Now().UTC()
	if err := r.s.d.store.UpdateVM(ctx, r.rec); err != nil {
		return fmt.Errorf("record provisioning: %w", err)
	}
	return nil
}

func (r *startRun) runProvision(ctx context.Context) error {
	spec, rec := r.rec.Spec.Provision, r.rec
	lv := r.s.getLive(rec.ID)
	if lv == nil {
		return fmt.Errorf("VM %q is not live", rec.Name)
	}
	c, err := r.s.agentClient(ctx, rec, lv)
	if err != nil {
		return err
	}
	sc, err := guestcp.NewClient(c.SSH())
	if err != nil {
		return fmt.Errorf("sftp: %w", err)
	}
	defer sc.Close()
	dir := filepath.Join(rec.Runtime.Dir, provisionDir)
	if spec.Copy {
		f, err := os.Open(filepath.Join(dir, provisionCopyTar))
		if err != nil {
			return fmt.Errorf("copy files: %w", err)
		}
		skipped, err := guestcp.ExtractTar(ctx, sc, rec.Name, f, "/", guestcp.Options{})
		f.Close()
		if err != nil {
			return fmt.Errorf("copy files: %w", err)
		}
		for _, s := range skipped {
			r.op.log.Warn("provision copy: not a file, directory or link: skipped", "path", s)
		}
	}
	if len(spec.Scripts) == 0 {
		return nil
	}
	if err := sc.MkdirAll(guestProvisionDir); err != nil {
		return fmt.Errorf("create %s in the guest: %w", guestProvisionDir, err)
	}
	for _, name := range spec.Scripts {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return fmt.Errorf("provisioning script %s: %w", name, err)
		}
		gp := path.Join(guestProvisionDir, name)
		f, err := sc.OpenFile(gp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
		if err == nil {
			_, err = f.Write(data)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err == nil {
			err = sc.Chmod(gp, 0o700)
		}
		if err != nil {
			return fmt.Errorf("put provisioning script %s in the guest: %w", name, err)
		}
	}
	for _, name := range spec.Scripts {
		if err := r.runScript(ctx, c, name); err != nil {
			return err
		}
	}
	return nil
}

// provisionWrapper runs the script $p with its output both to the caller
// (progress) and the guest's console (`vm logs`), and exits with the
// script's status (POSIX sh has no pipefail: the status travels on fd 4).
// Without tee the output goes to the caller only.
const provisionWrapper = `cd /root 2>/dev/null || cd /
if ! command -v tee >/dev/null 2>&1; then exec "$p" 2>&1; fi
{ st=$( { { "$p" 3>&- 4>&-; echo $? >&4; } 2>&1 | tee /dev/console >&3; } 4>&1 ); } 3>&1
exit "$st"`

// runScript runs one uploaded script, streaming its lines as progress of
// the "provision" stage.
func (r *startRun) runScript(ctx context.Context, c *agent.Client, name string) error {
	r.op.stage("provision", "run "+name)
	sink := &lineSink{emit: func(line string) {
		report(ctx, api.Progress{Stage: "provision", Message: name + ": " + line, VMID: r.rec.ID})
	}}
	cmd := "p=" + shQuote(path.Join(guestProvisionDir, name)) + "\n" + provisionWrapper
	code, err := c.Exec(ctx, cmd, nil, nil, sink, sink)
	sink.flush()
	if err != nil {
		return fmt.Errorf("provisioning script %s: %w", name, err)
	}
	if code != 0 {
		msg := fmt.Sprintf("provisioning script %s exited with status %d", name, code)
		if len(sink.tail) > 0 {
			msg += "; its last lines:\n" + strings.Join(sink.tail, "\n")
		}
		return api.Errorf(api.KindUnavailable, "%s", msg)
	}
	return nil
}

func shQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// lineSink turns a script's output into progress events, one per line,
// and keeps its last lines for the error.
type lineSink struct {
	mu      sync.Mutex
	partial bytes.Buffer
	emit    func(line string)
	tail    []string
}

func (l *lineSink) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial.Write(b)
	for {
		line, err := l.partial.ReadString('\n')
		if err != nil {
			// Keep the unfinished line; bound it.
			rest := line
			l.partial.Reset()
			if len(rest) > 4096 {
				l.line(rest)
			} else {
				l.partial.WriteString(rest)
			}
			return len(b), nil
		}
		l.line(strings.TrimRight(line, "\r\n"))
	}
}

func (l *lineSink) line(s string) {
	l.tail = append(l.tail, s)
	if len(l.tail) > provisionTailLines {
		l.tail = l.tail[len(l.tail)-provisionTailLines:]
	}
	l.emit(s)
}

// flush emits an unfinished last line.
func (l *lineSink) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.partial.Len() > 0 {
		l.line(l.partial.String())
		l.partial.Reset()
	}
}
