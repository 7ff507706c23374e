package qemu

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"banger/internal/vmm"
	"banger/internal/vmm/virtiofs"
)

// shareTransport is how this driver serves Spec.Shares: the forced one,
// else virtio-fs where a virtiofsd exists, else 9p (QEMU's own server,
// always built in). Looked up on every call: installing virtiofsd needs
// no daemon restart.
func (d *Driver) shareTransport() string {
	if d.opt.ShareTransport != "" {
		return d.opt.ShareTransport
	}
	if _, err := virtiofs.Find(); err == nil {
		return vmm.ShareVirtiofs
	}
	return vmm.Share9p
}

// shareArgs are the devices of s.Shares: a vhost-user-fs device per
// virtiofsd socket, or a 9p fsdev QEMU serves itself.
func (d *Driver) shareArgs(s vmm.Spec) []string {
	var a []string
	for i, sh := range s.Shares {
		id := fmt.Sprintf("fs%d", i)
		if d.shareTransport() == vmm.ShareVirtiofs {
			a = append(a,
				"-chardev", "socket,id="+id+",path="+qemuEscape(virtiofs.SocketPath(s.RuntimeDir, i)),
				"-device", "vhost-user-fs-device,chardev="+id+",tag="+sh.Tag)
			continue
		}
		// 9p: QEMU (after -runas, the banger-vmm user) opens the files
		// itself; its local backend never follows a symlink out of path.
		// security_model=none: files belong to the QEMU user.
		fsdev := "local,id=" + id + ",path=" + qemuEscape(sh.HostPath) + ",security_model=none"
		if sh.ReadOnly {
			fsdev += ",readonly=on"
		}
		a = append(a, "-fsdev", fsdev, "-device", "virtio-9p-device,fsdev="+id+",mount_tag="+sh.Tag)
	}
	return a
}

// startShares starts a virtiofsd per share (none for 9p) and returns the
// processes and their state to persist.
func (d *Driver) startShares(s vmm.Spec) ([]*vmm.Process, []vmm.HelperState, error) {
	if len(s.Shares) == 0 || d.shareTransport() != vmm.ShareVirtiofs {
		return nil, nil, nil
	}
	bin, err := virtiofs.Find()
	if err != nil {
		return nil, nil, err
	}
	var procs []*vmm.Process
	var st []vmm.HelperState
	for i, sh := range s.Shares {
		log := filepath.Join(s.Dir, fmt.Sprintf("virtiofsd-%d.log", i))
		p, err := virtiofs.Start(bin, sh, virtiofs.SocketPath(s.RuntimeDir, i), log)
		if err != nil {
			killAll(procs)
			return nil, nil, err
		}
		procs = append(procs, p)
		st = append(st, vmm.HelperState{PID: p.PID(), StartTime: p.StartTime(), Mention: virtiofs.Mention(sh)})
	}
	return procs, st, nil
}

// adoptHelpers re-attaches to the share servers an earlier daemon
// started; one that is gone is left out (its share is gone with it).
func adoptHelpers(st []vmm.HelperState) []*vmm.Process {
	var ps []*vmm.Process
	for _, h := range st {
		if p, err := vmm.Attach(h.PID, h.StartTime, h.Mention); err == nil {
			ps = append(ps, p)
		}
	}
	return ps
}

// helperExit is how long a share server gets to notice that QEMU is gone.
const helperExit = 3 * time.Second

// reapHelpers waits for the share servers to exit after QEMU did, and
// kills those that do not.
func reapHelpers(ps []*vmm.Process) {
	deadline := time.After(helperExit)
	for _, p := range ps {
		select {
		case <-p.Done():
		case <-deadline:
			p.Kill()
		}
	}
}

func killAll(ps []*vmm.Process) {
	for _, p := range ps {
		p.Kill()
	}
}

// closeFiles closes the fds passed to QEMU, except keep (the caller's).
func closeFiles(files []*os.File, keep *os.File) {
	for _, f := range files {
		if f != keep {
			f.Close()
		}
	}
}
