package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"banger/internal/guestproto"
	"golang.org/x/sys/unix"
)

// configureNetwork brings up lo, and eth0 with banger.ip and a default route
// via banger.gw when given.
func configureNetwork(cfg guestproto.Config) error {
	if lo, err := netlink.LinkByName("lo"); err == nil {
		netlink.LinkSetUp(lo)
	}
	if !cfg.IP.IsValid() {
		return nil
	}
	var eth netlink.Link
	var err error
	for range 250 { // virtio_net registers eth0 as it loads; wait up to ~5 s
		if eth, err = netlink.LinkByName("eth0"); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("no eth0 for %s=%s (is virtio_net in the initramfs module list?): %w", guestproto.KeyIP, cfg.IP, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: cfg.IP.Addr().AsSlice(), Mask: net.CIDRMask(cfg.IP.Bits(), 32)}}
	if err := netlink.AddrReplace(eth, addr); err != nil {
		return fmt.Errorf("add %s to eth0: %w", cfg.IP, err)
	}
	if err := netlink.LinkSetUp(eth); err != nil {
		return fmt.Errorf("set eth0 up: %w", err)
	}
	if cfg.Gateway.IsValid() {
		route := &netlink.Route{LinkIndex: eth.Attrs().Index, Gw: cfg.Gateway.AsSlice()}
		if err := netlink.RouteReplace(route); err != nil {
			return fmt.Errorf("default route via %s: %w", cfg.Gateway, err)
		}
	}
	logf("eth0 %s gw %s", cfg.IP, cfg.Gateway)
	return nil
}

// writeResolvConf writes banger.dns servers to /etc/resolv.conf, replacing a
// symlink (systemd-resolved images) with a plain file.
func writeResolvConf(cfg guestproto.Config) error {
	if len(cfg.DNS) == 0 {
		return nil
	}
	var b strings.Builder
	b.WriteString("# written by banger-init from banger.dns=\n")
	for _, d := range cfg.DNS {
		fmt.Fprintf(&b, "nameserver %s\n", d)
	}
	return writeFileRenamed("/etc/resolv.conf", []byte(b.String()), 0o644, false)
}

// setHostname sets the kernel hostname and keeps /etc/hostname and
// /etc/hosts in step (in the overlay, so the image is untouched).
func setHostname(name string, cfg guestproto.Config) error {
	if err := unix.Sethostname([]byte(name)); err != nil {
		return err
	}
	if err := writeFileRenamed("/etc/hostname", []byte(name+"\n"), 0o644, false); err != nil {
		return err
	}
	old, err := os.ReadFile("/etc/hosts")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	hosts := hostsWithName(string(old), name, cfg)
	if hosts == string(old) {
		return nil
	}
	return writeFileRenamed("/etc/hosts", []byte(hosts), 0o644, false)
}

// hostsWithName returns /etc/hosts content with localhost entries and one
// line for the hostname (the guest IP when known), replacing banger's
// previous line so a changed IP or name does not accumulate.
func hostsWithName(old, name string, cfg guestproto.Config) string {
	const tag = "# banger"
	var out []string
	hasLocal := false
	for _, l := range strings.Split(strings.TrimRight(old, "\n"), "\n") {
		if l == "" && len(out) == 0 {
			continue
		}
		if strings.HasSuffix(l, tag) {
			continue
		}
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "127.0.0.1" {
			hasLocal = true
		}
		out = append(out, l)
	}
	if !hasLocal {
		out = append([]string{"127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"}, out...)
	}
	ip := "127.0.1.1"
	if cfg.IP.IsValid() {
		ip = cfg.IP.Addr().String()
	}
	out = append(out, fmt.Sprintf("%s\t%s %s", ip, name, tag))
	return strings.Join(out, "\n") + "\n"
}

func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	return writeFileRenamed(path, data, perm, true)
}

// writeFileRenamed is writeFileAtomic whose fsync is optional: files that
// are rewritten at every boot, and a batch that one sync covers (the
// identity step), skip a journal commit and a disk flush each — under TCG
// each flush is a host fdatasync, tens of ms.
func writeFileRenamed(path string, data []byte, perm os.FileMode, durable bool) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err = tmp.Write(data); err == nil {
		err = tmp.Chmod(perm)
	}
	if err == nil && durable {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return os.Rename(tmp.Name(), path)
}
