// Command banger-init is PID 1 of every banger guest. It lives in the
// initramfs banger builds per kernel (see internal/initramfs) and:
//
//   - mounts /proc, /sys, /dev, /run and loads the kernel modules listed in
//     /etc/banger/modules;
//   - mounts the image rootfs (vda, read-only) under an overlay whose upper
//     layer is system.cow (vdb), switches root into it, and mounts the work
//     disk (vdc) at /root and the kernel's modules disk (vdd, read-only,
//     when banger.modules= names its release) at /lib/modules/<release>;
//   - sets the clock from banger.time= when no RTC did, and again whenever
//     the daemon sends banger-settime@banger;
//   - sets the hostname, configures eth0 and /etc/resolv.conf from the
//     banger.* kernel command line keys (internal/guestproto);
//   - serves SSH (exec, pty shell, sftp) on TCP :22 and on the agent channel
//     (virtio-serial port "banger.agent" or vsock port 1024), authorizing
//     /root/.ssh/authorized_keys;
//   - reaps orphans, and on poweroff/reboot stops every process, syncs and
//     unmounts so the disks are never left dirty.
//
// Build it static: CGO_ENABLED=0 go build -o banger-init ./cmd/banger-init
package main

import (
	"fmt"
	"log"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/guestproto"
)

var logger = log.New(os.Stderr, "banger-init: ", 0)

func logf(format string, args ...any) { logger.Printf(format, args...) }

func main() {
	if len(os.Args) == 2 && os.Args[1] == sftpServerArg {
		os.Exit(sftpServerMain())
	}
	if len(os.Args) > 1 && os.Args[1] == agentArg { // InitImage's agent child (initmode.go)
		agentMain(os.Args[2:])
		return
	}
	if isExitrd() { // systemd-shutdown's /shutdown in an InitImage guest (exitrd.go)
		exitrdMain(os.Args[1:])
		return
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "banger-init is the PID 1 of a banger guest, started by the kernel from the initramfs; it is not meant to be run by hand")
		os.Exit(2)
	}
	start := time.Now()
	procs := newProcTable(true)
	go handleSignals(procs)
	if err := boot(procs, start); err != nil {
		logf("boot failed: %v", err)
		logf("powering off")
		shutdown(unix.LINUX_REBOOT_CMD_POWER_OFF)
	}
	select {} // PID 1 must never return: the kernel would panic
}

func boot(procs *procTable, start time.Time) error {
	if err := mountEarly(); err != nil {
		return err
	}
	if f, err := os.OpenFile("/dev/console", os.O_WRONLY|os.O_APPEND, 0); err == nil {
		logger.SetOutput(f)
	}
	// Ctrl-Alt-Del (Firecracker's SendCtrlAltDel) becomes SIGINT to us
	// instead of an immediate hard reboot, so it gets a clean shutdown.
	unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF)

	raw, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return fmt.Errorf("read kernel command line: %w", err)
	}
	cfg, err := guestproto.ParseCmdline(string(raw))
	if err != nil {
		return fmt.Errorf("kernel command line: %w", err)
	}
	applyBootTime(cfg.Time)
	stopIdlePIT() // pit.go: the firmware's 18.2 Hz timer, which nothing here uses
	loadModules(guestproto.ModulesListPath)
	disks, err := findDisks(20*time.Second, cfg.Modules != "")
	if err != nil {
		return err
	}
	if err := mountRoot(disks); err != nil {
		return err
	}
	// The modules disk mounts while the rest of the boot runs (its I/O
	// overlaps the network and host key work); the agent starts only once
	// it is there, so a ready guest always has every module.
	modsDone := make(chan struct{})
	go func() {
		defer close(modsDone)
		mountModules(disks.modules, cfg.Modules)
	}()
	setupBasics()
	hostname := cfg.Hostname
	if hostname == "" {
		hostname = "banger"
	}
	if err := setHostname(hostname, cfg); err != nil {
		logf("hostname: %v", err)
	}
	if err := configureNetwork(cfg); err != nil {
		// The agent channel needs no network: stay up so the host can see
		// what went wrong.
		logf("network: %v", err)
	}
	if err := writeResolvConf(cfg); err != nil {
		logf("resolv.conf: %v", err)
	}
	hostKey, err := loadOrCreateHostKey(guestproto.HostKeyPath)
	if err != nil {
		return err
	}
	waitStart := time.Now()
	<-modsDone
	modsWait := time.Since(waitStart)
	// Shares need their driver modules (from the modules disk), and must
	// be there before the image's init or any service runs.
	mountShares(cfg)
	// Who stays PID 1 (initmode.go): in InitImage mode this hands PID 1
	// to the image's init and does not return unless that failed.
	mode, initPath, note := resolveInitMode(cfg.Init, "/")
	if note != "" {
		logf("%s", note)
	}
	if mode == guestproto.InitImage {
		logf("init: %v; staying PID 1", handOverToImageInit(cfg, initPath))
		mode = guestproto.InitBanger
	}
	srv := newSSHServer(hostKey, procs, logf)
	srv.guest.mode, srv.guest.initPath = mode, initPath
	srv.onPoweroff = func() { shutdown(unix.LINUX_REBOOT_CMD_POWER_OFF) }
	srv.onSetTime = setClock
	srv.onIdentity = applyIdentity
	go serveTCP(srv)
	if err := serveAgent(srv, cfg.Agent); err != nil {
		return err
	}
	logf("ready in %s (agent: %s; waited %s for the modules disk)", time.Since(start).Round(time.Millisecond), agentName(cfg.Agent), modsWait.Round(time.Microsecond))
	return nil
}

func agentName(a string) string {
	if a == "" {
		return "none, tcp :22 only"
	}
	return a
}
