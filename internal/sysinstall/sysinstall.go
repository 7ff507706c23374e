// Package sysinstall installs banger as a system service: the binaries,
// the `banger` group whose members may use the daemon's socket, and a
// systemd unit, enabled and started where systemd runs (`banger system
// install`); and takes it out again (`banger system uninstall`).
package sysinstall

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/template"
	"time"
)

// Defaults, matching the daemon's (internal/daemon.DefaultStateDir and
// DefaultRuntimeDir: the unit passes them as flags, so systemd and the
// daemon agree on the directories systemd creates).
const (
	DefaultPrefix = "/usr/local"
	StateDir      = "/var/lib/banger"
	RuntimeDir    = "/run/banger"
	ConfigDir     = "/etc/banger"
	Group         = "banger"
	UnitName      = "banger.service"
	UnitDir       = "/etc/systemd/system"
)

// Options says where to install. Root is "/" for this host; any other
// directory is a tree being prepared (an image, a test): files go under
// it, the group into its /etc/group, and nothing is enabled or started.
type Options struct {
	Root   string
	Prefix string // binaries: Prefix/bin/banger, Prefix/lib/banger/banger-init
	Banger string // the banger binary to install
	Init   string // the banger-init binary to install
	Out    io.Writer
	// Systemd reports whether systemd is PID 1 (nil: SystemdRunning).
	Systemd func() bool
	// Run runs a command (nil: exec, output to Out).
	Run func(ctx context.Context, name string, args ...string) error

	// asHost (tests) treats a Root other than "/" as this host's for the
	// systemd steps, so both of them can be checked in a temp dir.
	asHost bool
}

// SystemdRunning is sd_booted(3): systemd is the init system when
// /run/systemd/system exists.
func SystemdRunning() bool {
	st, err := os.Stat("/run/systemd/system")
	return err == nil && st.IsDir()
}

func (o *Options) fill() error {
	if o.Root == "" {
		o.Root = "/"
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if !filepath.IsAbs(o.Root) || !filepath.IsAbs(o.Prefix) {
		return fmt.Errorf("--root %q and --prefix %q must be absolute paths", o.Root, o.Prefix)
	}
	o.Root, o.Prefix = filepath.Clean(o.Root), filepath.Clean(o.Prefix)
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Systemd == nil {
		o.Systemd = SystemdRunning
	}
	if o.Run == nil {
		o.Run = func(ctx context.Context, name string, args ...string) error {
			cmd := exec.CommandContext(ctx, name, args...)
			var buf bytes.Buffer
			cmd.Stdout, cmd.Stderr = &buf, &buf
			if err := cmd.Run(); err != nil {
				return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(buf.String()))
			}
			return nil
		}
	}
	return nil
}

// onHost reports whether the install is into this host's own root (only
// then does systemd on this host matter).
func (o *Options) onHost() bool { return o.Root == "/" || o.asHost }

// rootArgs are groupadd/groupdel's arguments to act on Root's /etc/group.
func (o *Options) rootArgs(args ...string) []string {
	if o.Root == "/" {
		return args
	}
	return append([]string{"--root", o.Root}, args...)
}

// path is p (an absolute path on the target) under Root.
func (o *Options) path(p string) string { return filepath.Join(o.Root, p) }

// BinPath and InitPath are where the binaries go on the target.
func (o *Options) BinPath() string  { return filepath.Join(o.Prefix, "bin", "banger") }
func (o *Options) InitPath() string { return filepath.Join(o.Prefix, "lib", "banger", "banger-init") }

// UnitPath is the unit file's path on the target.
func UnitPath() string { return filepath.Join(UnitDir, UnitName) }

var unitTmpl = template.Must(template.New("unit").Parse(`# Installed by ` + "`banger system install`" + `; ` + "`banger system uninstall`" + ` removes it.
# Settings other than the directories: {{.ConfigDir}}/config.toml.
[Unit]
Description=banger: disposable microVMs
After=network.target

[Service]
Type=simple
ExecStart={{.Bin}} daemon --state-dir {{.StateDir}} --runtime-dir {{.RuntimeDir}}
Environment=BANGER_INIT={{.Init}}
# The socket, {{.RuntimeDir}}/banger.sock, is mode 0660 root:{{.Group}} (the
# daemon sets it): members of the {{.Group}} group use banger without sudo.
RuntimeDirectory=banger
RuntimeDirectoryMode=0755
# VMs outlive a daemon restart (the next daemon adopts them): keep their
# sockets under {{.RuntimeDir}}, and stop only the daemon, not the VMMs it
# started, as containerd does for its shims.
RuntimeDirectoryPreserve=yes
KillMode=process
StateDirectory=banger
StateDirectoryMode=0700
Restart=on-failure
RestartSec=2s
# In-flight calls get 10 s to finish on SIGTERM.
TimeoutStopSec=30s
# Every VM's VMM runs in this unit's cgroup.
TasksMax=infinity
LimitNOFILE=1048576

[Install]
WantedBy=multi-user.target
`))

// Unit is the systemd unit for binaries installed under prefix.
func Unit(prefix string) string {
	o := Options{Prefix: prefix}
	var b strings.Builder
	unitTmpl.Execute(&b, map[string]string{
		"Bin": o.BinPath(), "Init": o.InitPath(), "StateDir": StateDir, "RuntimeDir": RuntimeDir,
		"ConfigDir": ConfigDir, "Group": Group,
	})
	return b.String()
}

// Install installs the binaries, the group and the unit, then enables and
// starts the service where systemd runs on this host. Where it does not,
// the unit is installed but neither enabled nor started, and the message
// says how to start the daemon instead.
func Install(ctx context.Context, o Options) error {
	if err := o.fill(); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("banger system install needs root: run it with sudo")
	}
	for _, src := range []struct{ what, path string }{{"banger", o.Banger}, {"banger-init", o.Init}} {
		if st, err := os.Stat(src.path); err != nil || !st.Mode().IsRegular() {
			return fmt.Errorf("no %s binary to install at %q: run `make build` first (it builds both into bin/)", src.what, src.path)
		}
	}
	if st, err := os.Stat(o.Root); err != nil || !st.IsDir() {
		return fmt.Errorf("--root %s is not a directory", o.Root)
	}
	systemd := o.onHost() && o.Systemd()

	for _, f := range []struct{ src, dst string }{{o.Banger, o.BinPath()}, {o.Init, o.InitPath()}} {
		if err := installFile(f.src, o.path(f.dst), 0o755); err != nil {
			return err
		}
		fmt.Fprintf(o.Out, "installed %s\n", o.path(f.dst))
	}
	created, err := ensureGroup(ctx, &o)
	if err != nil {
		return err
	}
	if created {
		fmt.Fprintf(o.Out, "created group %s\n", Group)
	}
	unit := o.path(UnitPath())
	if err := writeFile(unit, []byte(Unit(o.Prefix)), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(o.Out, "installed %s\n", unit)

	switch {
	case !o.onHost():
		fmt.Fprintf(o.Out, "installed into %s: %s is not enabled or started (on that system: systemctl enable --now %s)\n", o.Root, UnitName, UnitName)
	case !systemd:
		fmt.Fprintf(o.Out, "systemd is not running on this host (no /run/systemd/system): %s was installed but NOT enabled or started.\n"+
			"Start the daemon by hand instead: %s daemon --state-dir %s --runtime-dir %s &\n", UnitName, o.BinPath(), StateDir, RuntimeDir)
	default:
		active := o.Run(ctx, "systemctl", "is-active", "--quiet", UnitName) == nil
		if err := o.Run(ctx, "systemctl", "daemon-reload"); err != nil {
			return err
		}
		if err := o.Run(ctx, "systemctl", "enable", UnitName); err != nil {
			return fmt.Errorf("%w (the unit is installed)", err)
		}
		sock := o.path(filepath.Join(RuntimeDir, "banger.sock"))
		switch {
		case active: // a running daemon keeps its old binary until it restarts
			if err := o.Run(ctx, "systemctl", "restart", UnitName); err != nil {
				return fmt.Errorf("%w (see journalctl -u banger)", err)
			}
		case socketAnswers(sock):
			fmt.Fprintf(o.Out, "enabled %s but did NOT start it: a banger daemon that systemd does not manage serves %s.\n"+
				"Stop that daemon, then: systemctl start %s\n", UnitName, sock, UnitName)
			fmt.Fprintf(o.Out, "to use banger without sudo: usermod -aG %s USER (then log in again)\n", Group)
			return nil
		default:
			if err := o.Run(ctx, "systemctl", "start", UnitName); err != nil {
				return fmt.Errorf("%w (see journalctl -u banger)", err)
			}
		}
		fmt.Fprintf(o.Out, "enabled and started %s (socket %s, state %s)\n", UnitName, sock, StateDir)
	}
	fmt.Fprintf(o.Out, "to use banger without sudo: usermod -aG %s USER (then log in again)\n", Group)
	return nil
}

// Uninstall stops and disables the service (where systemd runs), removes
// the unit and the binaries. State (StateDir, ConfigDir) and the
// group stay unless purge; running VMs keep running (their daemon is gone:
// purge refuses before changing anything while the caller says VMs run).
func Uninstall(ctx context.Context, o Options, purge bool) error {
	if err := o.fill(); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("banger system uninstall needs root: run it with sudo")
	}
	unit := o.path(UnitPath())
	if o.onHost() && o.Systemd() {
		if _, err := os.Stat(unit); err == nil {
			if err := o.Run(ctx, "systemctl", "disable", "--now", UnitName); err != nil {
				return err
			}
			fmt.Fprintf(o.Out, "stopped and disabled %s (running VMs keep running; a daemon started later adopts them)\n", UnitName)
		}
	}
	for _, p := range []string{unit, o.path(o.BinPath()), o.path(o.InitPath())} {
		if err := os.Remove(p); err == nil {
			fmt.Fprintf(o.Out, "removed %s\n", p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	os.Remove(filepath.Dir(o.path(o.InitPath()))) // lib/banger, when empty
	if o.onHost() && o.Systemd() {
		if err := o.Run(ctx, "systemctl", "daemon-reload"); err != nil {
			return err
		}
	}
	if !purge {
		fmt.Fprintf(o.Out, "kept the state in %s, the config in %s and the group %s (--purge removes them)\n", o.path(StateDir), o.path(ConfigDir), Group)
		return nil
	}
	for _, p := range []string{StateDir, ConfigDir, RuntimeDir} {
		if _, err := os.Lstat(o.path(p)); err != nil {
			continue
		}
		if err := os.RemoveAll(o.path(p)); err != nil {
			return fmt.Errorf("purge %s: %w", o.path(p), err)
		}
		fmt.Fprintf(o.Out, "removed %s\n", o.path(p))
	}
	if ok, err := hasGroup(&o); err != nil {
		return err
	} else if ok {
		if err := o.Run(ctx, "groupdel", o.rootArgs(Group)...); err != nil {
			return err
		}
		fmt.Fprintf(o.Out, "removed group %s\n", Group)
	}
	return nil
}

// socketAnswers reports whether a daemon accepts connections on sock.
func socketAnswers(sock string) bool {
	c, err := net.DialTimeout("unix", sock, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// hasGroup reports whether the target's /etc/group lists Group.
func hasGroup(o *Options) (bool, error) {
	data, err := os.ReadFile(o.path("/etc/group"))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, Group+":") {
			return true, nil
		}
	}
	return false, nil
}

// ensureGroup creates the system group Group unless the target has it.
func ensureGroup(ctx context.Context, o *Options) (bool, error) {
	if ok, err := hasGroup(o); err != nil || ok {
		return false, err
	}
	if err := o.Run(ctx, "groupadd", o.rootArgs("--system", Group)...); err != nil {
		return false, err
	}
	return true, nil
}

// installFile copies src to dst through a temp file and a rename, so a
// running daemon's binary is replaced, never rewritten in place. Copying a
// file onto itself (banger installing from its install path) is a no-op.
func installFile(src, dst string, mode os.FileMode) error {
	if a, err := os.Stat(src); err == nil {
		if b, err := os.Stat(dst); err == nil && os.SameFile(a, b) {
			return nil
		}
	}
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return writeFile(dst, data, mode)
}

func writeFile(dst string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("install %s: %w", dst, err)
	}
	return nil
}
