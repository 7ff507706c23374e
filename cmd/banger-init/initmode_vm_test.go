package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/guestproto"
)

// TestImageInitMode boots with banger.init=image on a busybox rootfs whose
// /sbin/init is busybox init with an inittab: banger-init hands PID 1 to
// it, the agent child keeps serving exec and the Setup request (a main
// process runs under it too), and the agent's poweroff goes through the
// image's init, whose shutdown leaves the disks clean.
func TestImageInitMode(t *testing.T) {
	skipWithoutQEMU(t)
	f := newGuestFixture(t)
	busyboxRootfs(t, f.disks.rootfs, map[string]string{
		"etc/inittab": "::sysinit:/bin/echo test-init: up\n::shutdown:/bin/umount -a -r\n",
	})
	v := bootVM(t, f.k, f.initrd, f.disks, []string{guestproto.KeyInit + "=" + guestproto.InitImage})
	c := v.dial(f.signer, filepath.Join(t.TempDir(), "known_hosts"))
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	reply, err := c.Setup(ctx, guestproto.Setup{
		Env:  []string{"FROM_SETUP=yes"},
		Main: &guestproto.MainProcess{Argv: []string{"sh", "-c", "echo main-in-image-mode $FROM_SETUP; exec sleep 1000"}},
	})
	if err != nil {
		t.Fatalf("setup: %v\nconsole:\n%s", err, v.consoleTail())
	}
	if reply.Init != guestproto.InitImage || reply.InitPath != "/bin/busybox" {
		t.Errorf("setup reply %+v", reply)
	}
	if got := strings.TrimSpace(mustRun(t, c, "cat /proc/1/comm")); got != "init" {
		t.Errorf("PID 1 is %q, want busybox init", got)
	}
	if got := mustRun(t, c, `tr '\0' ' ' < /proc/$PPID/cmdline; echo; echo $FROM_SETUP`); !strings.Contains(got, "@banger-init agent serial") || !strings.HasSuffix(got, "yes\n") {
		t.Errorf("session parent and env: %q", got)
	}
	mustRun(t, c, "echo work > /root/f")
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(v.consoleTail(), "main-in-image-mode yes") {
		if time.Now().After(deadline) {
			t.Fatalf("the main process did not write to the console:\n%s", v.consoleTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := c.Poweroff(ctx); err != nil {
		t.Fatal(err)
	}
	v.waitExit()
	console := v.consoleTail()
	for _, want := range []string{"handing PID 1 to /sbin/init", "test-init: up", "banger-init agent: ready", "banger-init agent: running /sbin/poweroff"} {
		if !strings.Contains(console, want) {
			t.Errorf("console lacks %q:\n%s", want, console)
		}
	}
	fsck(t, f.disks.work)
	fsck(t, f.disks.cow)
}
