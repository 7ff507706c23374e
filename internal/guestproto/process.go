package guestproto

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Init modes (KeyInit): who is the guest's PID 1 once the root is mounted.
const (
	// InitBanger keeps banger-init as PID 1 (the default).
	InitBanger = "banger"
	// InitImage hands PID 1 to the image's own /sbin/init (e.g. systemd)
	// after mounts, network and hostname; banger-init's agent keeps running
	// as a child process (`banger-init agent`).
	InitImage = "image"
	// InitAuto is InitImage when the guest's /sbin/init is a service
	// manager (RealInits), else InitBanger. The guest decides: it sees the
	// root as it is now, including what the VM installed in its overlay.
	InitAuto = "auto"
)

// ImageInitPath is the image init InitImage executes.
const ImageInitPath = "/sbin/init"

// RealInits are the base names /sbin/init must resolve to (through its
// symlinks) for InitAuto to pick InitImage: service managers that bring a
// system up by themselves. busybox is deliberately absent: an image whose
// /sbin/init is busybox usually has no inittab for a VM and would spawn
// shells on the console.
var RealInits = []string{"systemd", "openrc-init", "runit-init", "dinit", "s6-svscan"}

// ValidateInitMode accepts InitBanger, InitImage and InitAuto.
func ValidateInitMode(m string) error {
	switch m {
	case InitBanger, InitImage, InitAuto:
		return nil
	}
	return fmt.Errorf("init mode %q: want %s, %s or %s", m, InitAuto, InitBanger, InitImage)
}

// Restart policies of a main process.
const (
	RestartNo        = "no"         // an exit powers the VM off (the default)
	RestartOnFailure = "on-failure" // restart after a non-zero exit or a signal; exit 0 powers off
	RestartAlways    = "always"     // restart after any exit
)

// ValidateRestart accepts the restart policies; "" means RestartNo.
func ValidateRestart(p string) error {
	switch p {
	case "", RestartNo, RestartOnFailure, RestartAlways:
		return nil
	}
	return fmt.Errorf("restart policy %q: want %s, %s or %s", p, RestartNo, RestartOnFailure, RestartAlways)
}

// SetupRequest is an SSH global request the daemon sends once per boot,
// right after the agent is ready: its payload is a Setup (JSON), its reply
// a SetupReply (JSON) on success or an error message on refusal.
const SetupRequest = "banger-setup@banger"

// Setup is what the guest learns from the host after boot.
type Setup struct {
	// Env (KEY=VALUE) is the VM's environment: the image's Env plus the
	// create's -e. It applies to the main process and every exec session
	// (a session's own env requests override it).
	Env []string `json:"env,omitempty"`
	// Main, when set, is started and supervised by banger-init.
	Main *MainProcess `json:"main,omitempty"`
}

// MainProcess is the VM's main process: argv is executed directly (no
// shell), with the VM's Env, in WorkingDir as User; its stdout and stderr
// go to the console (`banger vm logs`).
type MainProcess struct {
	Argv       []string `json:"argv"`
	WorkingDir string   `json:"working_dir,omitempty"`
	User       string   `json:"user,omitempty"` // USER[:GROUP], names or ids
	Restart    string   `json:"restart,omitempty"`
}

// SetupReply is the guest's answer to a Setup.
type SetupReply struct {
	// Init is the mode the guest booted in (InitAuto resolved).
	Init string `json:"init"`
	// InitPath is what /sbin/init resolved to, when it exists.
	InitPath string `json:"init_path,omitempty"`
}

// Limits on what crosses the agent channel and the SSH env requests. Both
// sides check them; the guest must never trust the host's checks, nor the
// host the guest's.
const (
	MaxSetupBytes    = 256 << 10
	MaxReplyBytes    = 4 << 10
	MaxEnvEntries    = 1024
	MaxEnvNameBytes  = 256
	MaxEnvValueBytes = 32 << 10
	MaxArgs          = 4096
	MaxArgBytes      = 128 << 10
	MaxPathBytes     = 4096
	MaxUserBytes     = 256
)

// Session env names that banger-init's SSH server takes as settings of the
// session instead of environment variables (sent as SSH "env" requests, so
// any SSH client can use them: `ssh -o SetEnv=BANGER_WORKDIR=/tmp`).
const (
	EnvWorkdir = "BANGER_WORKDIR" // absolute working directory of the command
	EnvUser    = "BANGER_USER"    // USER[:GROUP] to run the command as
)

// MainExitPath is where banger-init records the main process's final exit
// status (ExitRecord) on system.cow's own filesystem, outside the overlay
// (the guest root cannot see it). The host reads it with debugfs after the
// VMM exited; the guest removes it whenever it starts a main process.
const (
	MainExitPath     = "/banger/main-exit"
	MaxExitFileBytes = 64
)

// ExitRecord renders an exit status for MainExitPath: "status N\n" with N
// the exit code, or 128+signal for a process killed by a signal.
func ExitRecord(code int) string { return "status " + strconv.Itoa(code) + "\n" }

// ParseExitRecord is the host's bounded parse of a guest-written
// MainExitPath: anything but "status N" with 0 <= N <= 255 is refused.
func ParseExitRecord(b []byte) (int, error) {
	if len(b) > MaxExitFileBytes {
		return 0, errors.New("exit record too long")
	}
	s, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "status ")
	if !ok {
		return 0, errors.New("malformed exit record")
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 255 {
		return 0, fmt.Errorf("malformed exit status %q", s)
	}
	return n, nil
}

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ValidateEnvName checks an environment variable name: letters, digits and
// '_', not starting with a digit, bounded.
func ValidateEnvName(n string) error {
	if len(n) > MaxEnvNameBytes || !envNameRE.MatchString(n) {
		return fmt.Errorf("environment variable name %q: want letters, digits and '_' (not first), at most %d bytes", truncate(n), MaxEnvNameBytes)
	}
	return nil
}

// ValidateEnv checks KEY=VALUE entries.
func ValidateEnv(env []string) error {
	if len(env) > MaxEnvEntries {
		return fmt.Errorf("%d environment variables: at most %d", len(env), MaxEnvEntries)
	}
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("environment entry %q: want KEY=VALUE", truncate(kv))
		}
		if err := ValidateEnvName(k); err != nil {
			return err
		}
		if err := ValidateEnvValue(k, v); err != nil {
			return err
		}
	}
	return nil
}

// ValidateEnvValue bounds a value and refuses NUL, which cannot cross execve.
func ValidateEnvValue(name, v string) error {
	if len(v) > MaxEnvValueBytes {
		return fmt.Errorf("environment variable %s: value longer than %d bytes", name, MaxEnvValueBytes)
	}
	if strings.IndexByte(v, 0) >= 0 {
		return fmt.Errorf("environment variable %s: value contains NUL", name)
	}
	return nil
}

// ValidateWorkdir accepts a clean-enough absolute path without NUL.
func ValidateWorkdir(d string) error {
	if d == "" {
		return nil
	}
	if !path.IsAbs(d) || len(d) > MaxPathBytes || strings.IndexByte(d, 0) >= 0 {
		return fmt.Errorf("working directory %q: want an absolute path", truncate(d))
	}
	return nil
}

var userPartRE = regexp.MustCompile(`^[A-Za-z0-9_.][A-Za-z0-9_.-]*\$?$`)

// ValidateUser checks the syntax of USER[:GROUP] (names or numeric ids);
// whether they exist is the guest's business (its /etc/passwd).
func ValidateUser(u string) error {
	if u == "" {
		return nil
	}
	user, group, hasGroup := strings.Cut(u, ":")
	if len(u) > MaxUserBytes || !userPartRE.MatchString(user) || hasGroup && !userPartRE.MatchString(group) {
		return fmt.Errorf("user %q: want USER[:GROUP], names or numeric ids", truncate(u))
	}
	return nil
}

// Validate checks a main process spec.
func (m *MainProcess) Validate() error {
	if len(m.Argv) == 0 || m.Argv[0] == "" {
		return errors.New("main process: empty command")
	}
	if len(m.Argv) > MaxArgs {
		return fmt.Errorf("main process: %d arguments, at most %d", len(m.Argv), MaxArgs)
	}
	for _, a := range m.Argv {
		if len(a) > MaxArgBytes || strings.IndexByte(a, 0) >= 0 {
			return fmt.Errorf("main process: argument %q is too long or contains NUL", truncate(a))
		}
	}
	if err := ValidateWorkdir(m.WorkingDir); err != nil {
		return fmt.Errorf("main process: %w", err)
	}
	if err := ValidateUser(m.User); err != nil {
		return fmt.Errorf("main process: %w", err)
	}
	if err := ValidateRestart(m.Restart); err != nil {
		return fmt.Errorf("main process: %w", err)
	}
	return nil
}

// Validate checks a Setup.
func (s *Setup) Validate() error {
	if err := ValidateEnv(s.Env); err != nil {
		return err
	}
	if s.Main != nil {
		return s.Main.Validate()
	}
	return nil
}

// DecodeSetup parses and validates a SetupRequest payload.
func DecodeSetup(b []byte) (Setup, error) {
	var s Setup
	if len(b) > MaxSetupBytes {
		return s, fmt.Errorf("setup request of %d bytes: at most %d", len(b), MaxSetupBytes)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("setup request: %w", err)
	}
	return s, s.Validate()
}

// DecodeSetupReply is the host's bounded parse of a SetupReply.
func DecodeSetupReply(b []byte) (SetupReply, error) {
	var r SetupReply
	if len(b) > MaxReplyBytes {
		return r, fmt.Errorf("setup reply of %d bytes: at most %d", len(b), MaxReplyBytes)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("setup reply: %w", err)
	}
	if r.Init != InitBanger && r.Init != InitImage {
		return r, fmt.Errorf("setup reply: init mode %q", truncate(r.Init))
	}
	// Invalid UTF-8 decodes to U+FFFD (3 bytes a byte), so a path can be
	// longer than the reply; cut it on a character boundary, never inside
	// one (the cut would be invalid UTF-8 again).
	r.InitPath = cutUTF8(r.InitPath, MaxPathBytes)
	return r, nil
}

// cutUTF8 is s cut to at most n bytes at the start of a character.
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// IsShell reports whether argv[0] is a bare shell: an image whose Cmd is a
// shell (debian's /bin/bash, busybox's /bin/sh) has no service to run; the
// shell would exit at once without a terminal.
func IsShell(argv []string) bool {
	if len(argv) == 0 {
		return false
	}
	switch path.Base(argv[0]) {
	case "sh", "bash", "ash", "dash", "zsh", "ksh", "mksh", "fish":
		return isLoginFlags(argv[1:])
	}
	return false
}

// isLoginFlags: `bash -l`, `sh -i` are still a bare shell; `sh -c CMD` is not.
func isLoginFlags(args []string) bool {
	for _, a := range args {
		if a != "-l" && a != "-i" && a != "--login" && a != "-il" && a != "-li" {
			return false
		}
	}
	return true
}

// IsInit reports whether argv[0] is an init (an image whose command boots
// its own init, like CMD ["/lib/systemd/systemd"]): never a main process;
// such images want --init image.
func IsInit(argv []string) bool {
	if len(argv) == 0 {
		return false
	}
	b := path.Base(argv[0])
	if b == "init" {
		return true
	}
	for _, r := range RealInits {
		if b == r {
			return true
		}
	}
	return false
}
