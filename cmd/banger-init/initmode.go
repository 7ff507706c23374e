package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/guestproto"
)

// Init modes (guestproto.KeyInit). In InitImage mode banger-init does the
// PID 1 work only up to a running root (mounts, network, hostname, host
// key), then:
//
//  1. copies its own binary to agentBinary (/run is a tmpfs that systemd
//     and other inits keep as it is);
//  2. starts that copy as `banger-init agent`, a child that serves SSH on
//     the agent channel and TCP :22 exactly as PID 1 does in InitBanger
//     mode (exec, pty, sftp, the Setup request, the main process), minus
//     the PID 1 duties; its argv[0] starts with '@', which tells systemd's
//     final kill loop to leave it until the disks are done;
//  3. executes /sbin/init in PID 1.
//
// The agent's poweroff request then asks the image's init to power off
// (systemd: SIGRTMIN+4, its "poweroff" signal; otherwise the image's own
// poweroff command), so the image's shutdown unmounts the disks.

const (
	agentArg    = "agent"                   // os.Args[1] of the agent child
	agentBinary = "/run/banger/banger-init" // the child's copy of this binary
)

// resolveInitMode decides, with the final root mounted at root, whether
// this boot hands PID 1 to the image (InitImage) or keeps it (InitBanger).
// initPath is what /sbin/init resolves to ("" if it does not exist); note
// explains a mode that was asked for but cannot be honoured.
func resolveInitMode(mode, root string) (resolved, initPath, note string) {
	p, err := resolveIn(root, guestproto.ImageInitPath)
	executable := false
	if err == nil {
		initPath = p
		st, err := os.Stat(filepath.Join(root, p))
		executable = err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
	}
	switch mode {
	case guestproto.InitImage:
		if !executable {
			return guestproto.InitBanger, initPath, fmt.Sprintf("%s=%s but the image has no executable %s; staying PID 1", guestproto.KeyInit, mode, guestproto.ImageInitPath)
		}
		return guestproto.InitImage, initPath, ""
	case guestproto.InitAuto:
		if executable && slices.Contains(guestproto.RealInits, path.Base(initPath)) {
			return guestproto.InitImage, initPath, ""
		}
	}
	return guestproto.InitBanger, initPath, ""
}

// resolveIn follows the symlinks of p (every component) as if root were
// "/", without ever leaving root: absolute link targets restart at root.
func resolveIn(root, p string) (string, error) {
	const maxLinks = 40
	links := 0
	resolved := "/"
	rest := strings.Split(p, "/")
	for len(rest) > 0 {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			resolved = path.Dir(resolved)
			continue
		}
		next := path.Join(resolved, c)
		full := filepath.Join(root, next)
		fi, err := os.Lstat(full)
		if err != nil {
			return "", err
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			resolved = next
			continue
		}
		if links++; links > maxLinks {
			return "", fmt.Errorf("%s: too many levels of symbolic links", p)
		}
		target, err := os.Readlink(full)
		if err != nil {
			return "", err
		}
		if path.IsAbs(target) {
			resolved = "/"
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return resolved, nil
}

// handOverToImageInit starts the agent child and executes the image's init
// in PID 1. It returns only if that failed, with the child stopped, so the
// caller can go on as InitBanger.
func handOverToImageInit(cfg guestproto.Config, initPath string) error {
	if err := copySelf(agentBinary); err != nil {
		return fmt.Errorf("copy banger-init to %s: %w", agentBinary, err)
	}
	// systemd's exitrd (exitrd.go): without it system.cow is left dirty
	// at every poweroff. Other inits ignore the file.
	if err := os.MkdirAll(exitrdDir, 0o755); err == nil {
		os.Remove(exitrdPath)
		if err := os.Link(agentBinary, exitrdPath); err != nil {
			logf("exitrd %s: %v; system.cow may be left dirty at poweroff", exitrdPath, err)
		}
	}
	cmd := &exec.Cmd{
		Path:        agentBinary,
		Args:        []string{"@banger-init", agentArg, cfg.Agent, initPath},
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	if console, err := os.OpenFile("/dev/console", os.O_WRONLY|os.O_APPEND|unix.O_NOCTTY, 0); err == nil {
		defer console.Close()
		cmd.Stdout, cmd.Stderr = console, console
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the agent: %w", err)
	}
	logf("handing PID 1 to %s (%s); the agent runs as pid %d", guestproto.ImageInitPath, initPath, cmd.Process.Pid)
	unix.Sync()
	signal.Reset()
	err := unix.Exec(guestproto.ImageInitPath, []string{guestproto.ImageInitPath}, os.Environ())
	cmd.Process.Kill()
	return fmt.Errorf("exec %s: %w", guestproto.ImageInitPath, err)
}

// copySelf copies the running binary (the initramfs's, still reachable
// through /proc/self/exe after switch_root) to dst.
func copySelf(dst string) error {
	src, err := os.Open("/proc/self/exe")
	if err != nil {
		return err
	}
	defer src.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp := dst + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, src)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, dst)
}

// agentMain is `banger-init agent KIND INITPATH`: the SSH server of an
// InitImage guest, a child of the image's init.
func agentMain(args []string) {
	logger.SetPrefix("banger-init agent: ")
	kind, initPath := "", ""
	if len(args) > 0 {
		kind = args[0]
	}
	if len(args) > 1 {
		initPath = args[1]
	}
	// Orphans of the sessions we start come back to us, not to the image's
	// init, so the reaper below delivers every status.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		logf("PR_SET_CHILD_SUBREAPER: %v", err)
	}
	procs := newProcTable(true)
	go agentSignals(procs)
	hostKey, err := loadOrCreateHostKey(guestproto.HostKeyPath)
	if err != nil {
		logf("%v", err)
		os.Exit(1)
	}
	srv := newSSHServer(hostKey, procs, logf)
	srv.guest.mode, srv.guest.initPath = guestproto.InitImage, initPath
	srv.guest.initUp = waitInitUp(initPath, initUpTimeout)
	srv.onPoweroff = func() { imagePoweroff(procs) }
	srv.onSetTime = setClock // the host keeps the clock in every mode
	srv.onIdentity = applyIdentity
	go serveTCP(srv)
	if err := serveAgent(srv, kind); err != nil {
		logf("%v", err)
		os.Exit(1)
	}
	logf("ready (agent: %s, PID 1: %s)", agentName(kind), initPath)
	select {}
}

// initUpTimeout bounds how long the Setup reply waits for the image's init
// to answer (waitInitUp). Measured under TCG on a loaded 2-core host:
// systemd took 20–40 s from exec to its private socket.
const initUpTimeout = 120 * time.Second

// systemdPrivate is the socket systemctl (as root) talks to PID 1 on.
const systemdPrivate = "/run/systemd/private"

// waitInitUp returns a channel closed once the image's init can be talked
// to, or after timeout. The agent starts before /sbin/init is executed,
// so without this a create returned while systemd was still loading its
// units and `vm run -- systemctl is-system-running --wait` failed with
// "Failed to connect to bus: No such file or directory" (systemctl only
// waits for a boot it can ask about). For systemd "up" is a connect to
// its private socket succeeding: the file exists from bind(), a moment
// before listen(). Other inits have no such point: the channel is closed
// at once.
func waitInitUp(initPath string, timeout time.Duration) <-chan struct{} {
	up := make(chan struct{})
	if path.Base(initPath) != "systemd" {
		close(up)
		return up
	}
	go func() {
		defer close(up)
		start := time.Now()
		for time.Since(start) < timeout {
			if c, err := net.DialTimeout("unix", systemdPrivate, time.Second); err == nil {
				c.Close()
				logf("systemd answers on %s (%s after the agent started)", systemdPrivate, time.Since(start).Round(time.Millisecond))
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		logf("systemd did not answer on %s within %s; answering the Setup anyway", systemdPrivate, timeout)
	}()
	return up
}

// agentSignals reaps children and outlives the image init's "terminate
// everything" at shutdown long enough to keep the host's connection:
// SIGTERM, SIGINT and SIGHUP are caught and dropped (caught, not ignored:
// an ignored signal would stay ignored in every command we start).
func agentSignals(procs *procTable) {
	ch := make(chan os.Signal, 16)
	signal.Notify(ch, unix.SIGCHLD, unix.SIGTERM, unix.SIGINT, unix.SIGHUP)
	for s := range ch {
		if s == unix.SIGCHLD {
			procs.reap()
		}
	}
}

// sigRTMINsystemd is SIGRTMIN+4 as systemd counts it (glibc's SIGRTMIN,
// 34): systemd's "start poweroff.target" signal.
const sigRTMINsystemd = unix.Signal(34 + 4)

// imagePoweroff asks the image's init for a clean poweroff.
func imagePoweroff(procs *procTable) {
	shuttingDown.Store(true)
	exe, _ := os.Readlink("/proc/1/exe")
	if path.Base(exe) == "systemd" {
		logf("asking systemd (PID 1) to power off")
		if err := unix.Kill(1, sigRTMINsystemd); err != nil {
			logf("signal PID 1: %v", err)
		}
		return
	}
	p, err := lookPathIn("poweroff", defaultPath)
	if err != nil {
		logf("PID 1 is %s and the image has no poweroff command: cannot power off cleanly", exe)
		return
	}
	logf("running %s (PID 1 is %s)", p, exe)
	cmd := &exec.Cmd{Path: p, Args: []string{"poweroff"}, Env: []string{"PATH=" + defaultPath}, Dir: "/"}
	if _, err := procs.start(cmd); err != nil {
		logf("%s: %v", p, err)
	}
}
