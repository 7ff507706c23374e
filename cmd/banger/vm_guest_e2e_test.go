package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/testenv"
)

// TestVMGuestModules: every module of the VM's kernel is in the guest. The
// modules disk is mounted read-only at /lib/modules/<release>, modprobe
// loads a module the initramfs does not carry, modinfo reads its metadata,
// and the kernel's autoloader finds modprobe.
func TestVMGuestModules(t *testing.T) {
	e := newVMEnv(t)
	e.mustRun(t, "vm", "create", "--image", "busybox", "--name", "mods")
	mp := "/lib/modules/" + e.release
	out := e.mustRun(t, "vm", "exec", "mods", "--", "sh", "-c",
		"grep ' "+mp+" ' /proc/mounts; modprobe br_netfilter && lsmod | grep -c '^br_netfilter'; modinfo overlay | grep -c '^filename:'; cat /proc/sys/kernel/modprobe")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !regexp.MustCompile(`^/dev/vd[a-z] `+regexp.QuoteMeta(mp)+` ext4 ro[, ]`).MatchString(lines[0]) ||
		lines[1] != "1" || lines[2] != "1" || !strings.HasSuffix(lines[3], "/modprobe") {
		t.Fatalf("modules in the guest:\n%s", out)
	}
	console := e.mustRun(t, "vm", "logs", "mods")
	if m := regexp.MustCompile(`modules disk \S+ mounted at \S+ in (\S+)`).FindStringSubmatch(console); m == nil {
		t.Errorf("console has no modules mount line:\n%s", tail(console, 30))
	} else {
		t.Logf("modules disk mount in the guest: %s", m[1])
	}
	if m := regexp.MustCompile(`ready in \S+ .*waited (\S+) for the modules disk`).FindString(console); m != "" {
		t.Logf("banger-init: %s", m)
	}
	for _, l := range strings.Split(e.log.String(), "\n") {
		if strings.Contains(l, "stage=prepare_disks") && strings.Contains(l, "op=vm.create") {
			t.Logf("daemon: %s", l) // prev_stage_ms is prepare_modules
		}
	}
	e.mustRun(t, "vm", "rm", "-f", "mods")
}

// guestClockOffset returns guest minus host wall clock in whole seconds,
// bracketing the guest's reading between two host readings.
func guestClockOffset(t *testing.T, e *vmEnv, name string) int64 {
	t.Helper()
	before := time.Now().Unix()
	out := e.mustRun(t, "vm", "exec", name, "--", "date", "+%s")
	after := time.Now().Unix()
	g, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
	if err != nil {
		t.Fatalf("guest date: %q", out)
	}
	switch {
	case g < before:
		return g - before
	case g > after:
		return g - after
	}
	return 0
}

// TestVMGuestClockAndBasics: the guest's clock is the host's right after
// create, after a restart and after the daemon re-adopts the VM (which
// corrects a clock set wrong meanwhile); and every boot gives the guest
// what a workload expects: cgroup2, /dev/shm, devpts, a 1777 /tmp, a PATH,
// /etc/hosts, and a machine id of its own that survives a restart.
func TestVMGuestClockAndBasics(t *testing.T) {
	e := newVMEnv(t)
	e.mustRun(t, "vm", "create", "--image", "busybox", "--name", "real")
	if off := guestClockOffset(t, e, "real"); off < -2 || off > 2 {
		t.Errorf("guest clock off by %d s right after create", off)
	}
	const basics = `set -e
grep -c ' /sys/fs/cgroup cgroup2 ' /proc/mounts
grep ' /dev/pts devpts ' /proc/mounts | grep -c 'gid=5,mode=620,ptmxmode=666'
grep -c ' /dev/shm tmpfs ' /proc/mounts
stat -c %a /tmp /dev/shm
echo "$PATH"
grep -cE '^127\.0\.0\.1[[:space:]]+localhost' /etc/hosts
grep -cE '[[:space:]]real( |$)' /etc/hosts
cat /etc/machine-id`
	check := func(when string) string {
		out := e.mustRun(t, "vm", "exec", "real", "--", "sh", "-c", basics)
		l := strings.Split(strings.TrimSpace(out), "\n")
		if len(l) != 9 || l[0] != "1" || l[1] != "1" || l[2] != "1" || l[3] != "1777" || l[4] != "1777" ||
			!strings.Contains(l[5], "/usr/sbin") || !strings.Contains(l[5], "/bin") || l[6] != "1" || l[7] != "1" ||
			!regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(l[8]) {
			t.Fatalf("%s: basics:\n%s", when, out)
		}
		return l[8]
	}
	id := check("first boot")

	e.mustRun(t, "vm", "restart", "real")
	if got := check("after restart"); got != id {
		t.Errorf("machine id changed across a restart: %s then %s", id, got)
	}
	if off := guestClockOffset(t, e, "real"); off < -2 || off > 2 {
		t.Errorf("guest clock off by %d s after restart", off)
	}

	// Set the guest's clock wrong, kill the daemon; the next one re-adopts
	// the VM and corrects it.
	e.mustRun(t, "vm", "exec", "real", "--", "date", "-s", "@1000000000")
	if off := guestClockOffset(t, e, "real"); off > -1e8 {
		t.Fatalf("date -s did not set the guest clock back (offset %d s)", off)
	}
	e.cmd.Process.Signal(syscall.SIGKILL)
	e.cmd.Wait()
	e.daemonProc = startDaemonProcArgs(t, e.stateDir, e.runDir, "--netns", e.ns)
	deadline := time.Now().Add(60 * time.Second)
	for {
		off := guestClockOffset(t, e, "real")
		if off >= -2 && off <= 2 {
			t.Logf("guest clock right %s after the daemon restart", time.Since(deadline.Add(-60*time.Second)).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("guest clock still off by %d s a minute after the daemon re-adopted it", off)
		}
		time.Sleep(500 * time.Millisecond)
	}
	e.mustRun(t, "vm", "rm", "-f", "real")
}

// addUplink gives the daemon's namespace an uplink the way the smoke suite
// does: a namespace of its own joined by a veth pair, 192.0.2.1/24 there,
// 192.0.2.2/24 on the daemon's side with its default route via the uplink
// (so a --nat guest reaches 192.0.2.1 through the daemon's masquerade).
// It returns the uplink namespace's name.
func addUplink(t *testing.T, e *vmEnv) string {
	t.Helper()
	up := e.ns + "u"
	vd, vu := fmt.Sprintf("bgud%d", os.Getpid()%100000), fmt.Sprintf("bguu%d", os.Getpid()%100000)
	for _, args := range [][]string{
		{"netns", "add", up},
		{"-n", up, "link", "set", "lo", "up"},
		{"-n", e.ns, "link", "add", vd, "type", "veth", "peer", "name", vu, "netns", up},
		{"-n", up, "addr", "add", "192.0.2.1/24", "dev", vu},
		{"-n", up, "link", "set", vu, "up"},
		{"-n", e.ns, "addr", "add", "192.0.2.2/24", "dev", vd},
		{"-n", e.ns, "link", "set", vd, "up"},
		{"-n", e.ns, "route", "add", "default", "via", "192.0.2.1"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v %s", strings.Join(args, " "), err, out)
		}
		if args[0] == "netns" {
			t.Cleanup(func() { exec.Command("ip", "netns", "del", up).Run() })
		}
	}
	return up
}

// listenIn opens a TCP listener whose socket lives in network namespace
// ns. The thread that entered ns is locked and never unlocked, so the
// runtime retires it instead of reusing it in the wrong namespace.
func listenIn(t *testing.T, ns, addr string) net.Listener {
	t.Helper()
	type res struct {
		ln  net.Listener
		err error
	}
	c := make(chan res, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			c <- res{err: err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			c <- res{err: fmt.Errorf("setns %s: %w", ns, err)}
			return
		}
		ln, err := net.Listen("tcp", addr)
		c <- res{ln, err}
	}()
	r := <-c
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { r.ln.Close() })
	return r.ln
}

// testCA is a throwaway certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "banger test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue signs a server certificate for ip valid from notBefore to notAfter.
func (ca *testCA) issue(t *testing.T, ip string, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: ip},
		NotBefore: notBefore, NotAfter: notAfter,
		IPAddresses: []net.IP{net.ParseIP(ip)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestVMGuestTLS: a guest's clock is right enough for TLS. curl (the
// host's, copied in with its libraries) in a --nat guest verifies a
// certificate issued now by a test CA, valid from 30 s ago for 5 minutes
// only, for an HTTPS server in the uplink namespace; a guest clock off by
// more than that fails the handshake. The same curl refuses a certificate
// that becomes valid in an hour, so the check is real.
func TestVMGuestTLS(t *testing.T) {
	testenv.RequireTool(t, "curl", "ldd")
	e := newVMEnv(t)
	up := addUplink(t, e)
	e.mustRun(t, "vm", "create", "--image", "busybox", "--nat", "--name", "tls")
	e.installHostBinary(t, "tls", "/usr/bin/curl")
	ca := newTestCA(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, ca.pem, 0o644); err != nil {
		t.Fatal(err)
	}
	e.mustRun(t, "vm", "cp", caFile, "tls:/root/ca.pem")

	serve := func(addr string, cert tls.Certificate) {
		ln := tls.NewListener(listenIn(t, up, addr), &tls.Config{Certificates: []tls.Certificate{cert}})
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintln(w, "tls-ok")
		})}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	}
	// Issued now: after the VM booted, right before the guest connects.
	now := time.Now()
	serve("192.0.2.1:8443", ca.issue(t, "192.0.2.1", now.Add(-30*time.Second), now.Add(5*time.Minute)))
	serve("192.0.2.1:8444", ca.issue(t, "192.0.2.1", now.Add(time.Hour), now.Add(2*time.Hour)))

	out, stderr, err := e.run("vm", "exec", "tls", "--", "curl", "-sS", "--max-time", "60", "--cacert", "/root/ca.pem", "https://192.0.2.1:8443/")
	if err != nil || out != "tls-ok\n" {
		date, _, _ := e.run("vm", "exec", "tls", "--", "date", "-u")
		t.Fatalf("curl of a certificate issued now: %v %q %s (guest date %s, host %s)", err, out, stderr, strings.TrimSpace(date), time.Now().UTC().Format(time.UnixDate))
	}
	out, stderr, err = e.run("vm", "exec", "tls", "--", "curl", "-sS", "--max-time", "60", "--cacert", "/root/ca.pem", "https://192.0.2.1:8444/")
	if exitCode(err) != 60 || !strings.Contains(stderr, "not yet valid") {
		t.Fatalf("curl of a certificate valid from next hour: exit %d, %q %s; want exit 60, \"not yet valid\"", exitCode(err), out, stderr)
	}
	e.mustRun(t, "vm", "rm", "-f", "tls")
}

// TestVMGuestGivesMemoryBack: a guest gets a free page reporting balloon
// (its driver bound in the guest), and memory it uses and frees goes back
// to the host: the QEMU process's RSS rises by a 150 MiB tmpfs file and
// falls again after the file is removed (the guest reports free 2 MiB
// blocks ~2 s after they are freed; QEMU discards them).
func TestVMGuestGivesMemoryBack(t *testing.T) {
	e := newVMEnv(t)
	e.mustRun(t, "vm", "create", "--image", "busybox", "--name", "mem")
	if out := e.mustRun(t, "vm", "exec", "mem", "--", "sh", "-c", "ls /sys/bus/virtio/drivers/virtio_balloon/ | grep -c '^virtio'"); strings.TrimSpace(out) != "1" {
		t.Fatalf("no virtio_balloon device bound in the guest: %q", out)
	}
	pid := int(e.inspect(t, "mem")["pid"].(float64))
	rss := func() int64 {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`VmRSS:\s+(\d+) kB`).FindSubmatch(b)
		if m == nil {
			t.Fatalf("no VmRSS in /proc/%d/status", pid)
		}
		kb, _ := strconv.ParseInt(string(m[1]), 10, 64)
		return kb >> 10
	}
	before := rss()
	e.mustRun(t, "vm", "exec", "mem", "--", "sh", "-c", "mkdir -p /run/fill && mount -t tmpfs -o size=200m tmpfs /run/fill && dd if=/dev/zero of=/run/fill/f bs=1M count=150 2>/dev/null && sync")
	peak := rss()
	if peak-before < 100 {
		t.Fatalf("QEMU RSS %d -> %d MiB with a 150 MiB tmpfs file in the guest: the fill did not reach host memory", before, peak)
	}
	e.mustRun(t, "vm", "exec", "mem", "--", "sh", "-c", "rm /run/fill/f && umount /run/fill")
	deadline := time.Now().Add(60 * time.Second)
	for {
		now := rss()
		if peak-now >= 100 {
			t.Logf("QEMU RSS: %d MiB idle, %d MiB with the file, %d MiB after it was freed", before, peak, now)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("QEMU RSS %d MiB idle, %d with the file, still %d MiB 60 s after the guest freed it", before, peak, now)
		}
		time.Sleep(time.Second)
	}
	e.mustRun(t, "vm", "rm", "-f", "mem")
}
