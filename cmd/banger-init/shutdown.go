package main

import (
	"errors"
	"os"
	"os/signal"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// handleSignals reaps children on SIGCHLD and turns the init signals into a
// clean shutdown. busybox's poweroff/halt/reboot signal PID 1 with
// SIGUSR2/SIGUSR1/SIGTERM; the kernel sends SIGINT for Ctrl-Alt-Del (after
// CAD_OFF) and SIGPWR on power failure.
func handleSignals(procs *procTable) {
	ch := make(chan os.Signal, 16)
	signal.Notify(ch, unix.SIGCHLD, unix.SIGTERM, unix.SIGINT, unix.SIGPWR, unix.SIGUSR1, unix.SIGUSR2)
	for s := range ch {
		switch s {
		case unix.SIGCHLD:
			procs.reap()
		case unix.SIGTERM:
			logf("reboot requested")
			// With -no-reboot (QEMU) or Firecracker the VMM exits either way.
			go shutdown(unix.LINUX_REBOOT_CMD_RESTART)
		default:
			logf("power off requested (%v)", s)
			go shutdown(unix.LINUX_REBOOT_CMD_POWER_OFF)
		}
	}
}

var shutdownOnce sync.Once

// shutdown stops every process, leaves the disks clean and ends the VM. It
// runs once; later requests wait for it.
func shutdown(cmd int) {
	shutdownOnce.Do(func() {
		shuttingDown.Store(true) // mainproc.go: a killed main process is not restarted
		killAll(unix.SIGTERM, 3*time.Second)
		killAll(unix.SIGKILL, 2*time.Second)
		cmd = rebootCmd(cmd, "/sys") // before unmountAll takes /sys away
		unmountAll()
		if cmd == unix.LINUX_REBOOT_CMD_RESTART {
			logf("rebooting")
		} else {
			logf("powering off")
		}
		if err := unix.Reboot(cmd); err != nil {
			logf("reboot(%#x): %v", cmd, err)
		}
	})
	select {}
}

// killAll signals every process but PID 1 and waits, bounded, until none is
// left (wait4 says there are no children: everything orphaned was
// reparented to us and reaped).
func killAll(sig unix.Signal, grace time.Duration) {
	if err := unix.Kill(-1, sig); errors.Is(err, unix.ESRCH) {
		return // nothing else is running
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		pid, err := unix.Wait4(-1, nil, unix.WNOHANG, nil)
		if errors.Is(err, unix.ECHILD) {
			return
		}
		if pid <= 0 {
			time.Sleep(20 * time.Millisecond)
		}
	}
}
