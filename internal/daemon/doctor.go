package daemon

import (
	"banger/internal/antispoof"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"banger/api"
	"banger/internal/initramfs"
	"banger/internal/kernelcat"
	"banger/internal/nat"
	"banger/internal/vmm"
)

// checkVMMSetting validates the config's vmm against the registered
// drivers' names.
func (d *Daemon) checkVMMSetting() error {
	if d.cfg.VMM == "auto" {
		return nil
	}
	for _, drv := range d.drivers {
		if drv.Name() == d.cfg.VMM {
			return nil
		}
	}
	return fmt.Errorf("invalid vmm %q: use auto or one of %s", d.cfg.VMM, strings.Join(vmm.Names(d.drivers), ", "))
}

// selectDriver picks the hypervisor for cfg.VMM. It only probes (no
// process is started, no interface touched).
func (d *Daemon) selectDriver() {
	drv, why, err := vmm.Select(d.cfg.VMM, d.drivers...)
	if err != nil {
		d.driverWhy = err.Error()
		d.log.Warn("no usable hypervisor", "why", err)
		return
	}
	d.driver, d.driverWhy = drv, why
	d.log.Info("hypervisor selected", "vmm", drv.Name(), "why", why)
}

// doctor reports what this host can run and why.
func (d *Daemon) doctor() api.DoctorResult {
	var checks []api.DoctorCheck
	add := func(name string, ok bool, detail string) {
		checks = append(checks, api.DoctorCheck{Name: name, OK: ok, Detail: detail})
	}
	kvm, why := vmm.KVM()
	add("kvm", kvm, why)
	for _, drv := range d.drivers {
		p := drv.Probe()
		detail := p.Reason
		if !drv.Capabilities().Verified {
			detail += " (unverified: never booted by banger's tests on a real host)"
		}
		add(drv.Name(), p.Usable, detail)
	}
	for _, tool := range []string{"mkfs.ext4", "e2fsck", "resize2fs", "debugfs"} {
		path, err := exec.LookPath(tool)
		add(tool, err == nil, orMsg(path, err, "install e2fsprogs"))
	}
	for _, tool := range []string{"debootstrap", "apt-get", "dpkg-deb"} {
		path, err := exec.LookPath(tool)
		add(tool, err == nil, orMsg(path, err, "needed for the default image/kernel: apt-get install "+map[string]string{"debootstrap": "debootstrap", "apt-get": "apt", "dpkg-deb": "dpkg"}[tool]))
	}
	_, err := os.Stat("/dev/net/tun")
	add("tun", err == nil, orMsg("/dev/net/tun", err, "load the tun module (modprobe tun)"))
	nftOK, nftWhy := nftCheck()
	add("nftables", nftOK, nftWhy)
	if err := antispoof.Probe(); err != nil {
		add("nftables-bridge", false, fmt.Sprintf("bridge-family nftables not usable: %v (load nf_tables and bridge: guests could spoof each other's addresses without it)", err))
	} else {
		add("nftables-bridge", true, "bridge-family nftables usable (taps locked to their VM's MAC and IP)")
	}
	add("warm-start", true, d.vms.warmSummary())
	initPath, err := initramfs.LocateInit()
	add("banger-init", err == nil, orMsg(initPath, err, ""))
	vs, vwhy := vmm.VhostVsockUsable()
	add("vhost-vsock", vs, vwhy+" (optional: without it the agent uses virtio-serial)")
	checks = append(checks, d.kernelChecks()...)
	res := api.DoctorResult{Checks: checks, Why: d.driverWhy}
	if d.driver != nil {
		res.Backend = d.driver.Name()
	}
	return res
}

// nftCheck asks the kernel for its nftables tables over netlink: the same
// call NAT setup makes first, so a kernel without nf_tables (or a caller
// without CAP_NET_ADMIN) fails here as it would at the first --nat VM.
func nftCheck() (bool, string) {
	if err := nat.Probe(); err != nil {
		return false, fmt.Sprintf("nftables not usable: %v (load nf_tables: modprobe nf_tables; NAT and guest isolation need it)", err)
	}
	return true, "netlink nftables usable"
}

func orMsg(ok string, err error, hint string) string {
	if err == nil {
		return ok
	}
	if hint != "" {
		return err.Error() + ": " + hint
	}
	return err.Error()
}

// rotateKey makes a new daemon key. It holds keyUseMu exclusively, so no
// boot is between "disks prepared with a key" and "agent answered with that
// key" while the key changes: every VM either booted before (and gets the
// new key pushed over its live agent connection, still authenticated with
// the old one) or boots after (and gets a seed or work disk with the new
// key). Seeds are replaced by rename, never rewritten in place.
func (d *Daemon) rotateKey(ctx context.Context) (api.SSHKeyRotateResult, error) {
	d.keyUseMu.Lock()
	defer d.keyUseMu.Unlock()
	op := d.beginOperation(ctx, "sshkey.rotate")
	kp, err := newKeyPair()
	if err != nil {
		return api.SSHKeyRotateResult{}, op.fail(err)
	}
	vmsFailed := d.vms.pushKey(ctx, op, kp.pub)
	if err := d.keys.install(kp); err != nil {
		return api.SSHKeyRotateResult{}, op.fail(err)
	}
	imgs, err := d.store.ListImages(ctx)
	if err != nil {
		return api.SSHKeyRotateResult{}, op.fail(err)
	}
	// One broken image must not stop the others: a seed that could not be
	// refreshed now is retried by the next create from it (ensureSeedKey).
	refreshed, failed := 0, []string{}
	for _, img := range imgs {
		op.stage("refresh_seed", img.Name)
		if _, err := d.images.refreshManagedWorkSeedFingerprint(ctx, img); err != nil {
			op.log.Warn("refresh work seed", "image", img.Name, "err", err)
			failed = append(failed, img.Name)
			continue
		}
		refreshed++
	}
	op.done()
	return api.SSHKeyRotateResult{Fingerprint: d.keys.fingerprint(), ImagesRefreshed: refreshed, ImagesFailed: failed, VMsFailed: vmsFailed}, nil
}

// builtKernel is the catalog kernel banger builds for microVMs.
const builtKernel = "microvm-6.1"

// kernelChecks say which kernel VMs get by default and why, whether the
// built kernel can be built here, and what its Firecracker-style boot
// under QEMU proves.
func (d *Daemon) kernelChecks() []api.DoctorCheck {
	def := d.defaultKernel("")
	why := "the catalog default: Debian's cloud kernel, fetched with apt, no build needed; " +
		builtKernel + " boots faster and passes the smoke suite: `banger kernel pull " + builtKernel + "` builds it (minutes) and makes it the default"
	switch {
	case d.cfg.DefaultKernel != "":
		why = "the config's default_kernel"
	case d.driver != nil && d.driver.Capabilities().DefaultKernel != "":
		why = "the " + d.driver.Name() + " driver's choice: it announces virtio-mmio devices on the command line, which Debian's cloud kernel ignores"
	case def == builtKernel:
		why = "built here (pulled), so the default: it boots faster than Debian's cloud kernel and passes the smoke suite; default_kernel = \"" +
			kernelcat.DefaultKernel + "\" in the config goes back to the cloud kernel"
	}
	out := []api.DoctorCheck{{Name: "default-kernel", OK: true, Detail: def + ": " + why}}
	if err := kernelcat.CheckBuildTools(); err != nil {
		out = append(out, api.DoctorCheck{Name: "kernel-build", OK: false, Detail: err.Error()})
	} else {
		out = append(out, api.DoctorCheck{Name: "kernel-build", OK: true,
			Detail: "kernel build tools present: `banger kernel pull " + builtKernel + "` can build it (cached in " + d.cfg.KernelBuildCache + ")"})
	}
	out = append(out, api.DoctorCheck{Name: "firecracker-style", OK: true, Detail: "QEMU boots " + builtKernel +
		" the way Firecracker does (ACPI off, virtio-mmio devices on the command line, nothing to load to boot): that verifies the guest side of a Firecracker boot" +
		" (kernel config, banger-init, disks, network, agent) but not Firecracker itself (its API, jailer, vsock, snapshots), which needs KVM"})
	return out
}
