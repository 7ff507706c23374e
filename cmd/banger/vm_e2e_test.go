package main

import (
	"context"
	"encoding/json"
	"fmt"
	"golang.org/x/crypto/ssh"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"banger/internal/instance"
	"banger/internal/testenv"
	"banger/internal/testfixture"
)

// vmEnv is a daemon running inside a network namespace this test made,
// with the default kernel pulled and a busybox image imported.
type vmEnv struct {
	*daemonProc
	ns      string
	runDir  string
	release string
}

// kernelCache keeps one pulled default kernel for the whole test binary:
// each env copies it into its state dir instead of pulling again.
var kernelCache struct {
	once sync.Once
	root string // removed by TestMain
	dir  string
	err  error
}

func needVMHost(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t, "to boot VMs (bridge, taps, netns)")
	testenv.RequireTool(t, "qemu-system-x86_64", "mkfs.ext4", "ip", "apt-get", "dpkg-deb")
	testenv.RequireFile(t, testfixture.BusyboxPath, "busybox-static")
}

func pulledKernel(t *testing.T) string {
	kernelCache.once.Do(func() {
		dir, err := os.MkdirTemp("", "banger-kcache")
		if err != nil {
			kernelCache.err = err
			return
		}
		kernelCache.root = dir
		state := filepath.Join(dir, "state")
		d := startDaemonProcArgs(t, state, filepath.Join(dir, "run"))
		if _, stderr, err := d.run("kernel", "pull", "debian-cloud-amd64"); err != nil {
			kernelCache.err = fmt.Errorf("kernel pull: %v: %s", err, stderr)
		}
		d.cmd.Process.Signal(syscall.SIGTERM)
		d.cmd.Wait()
		kernelCache.dir = filepath.Join(state, "kernels", "debian-cloud-amd64")
	})
	if kernelCache.err != nil {
		t.Fatal(kernelCache.err)
	}
	return kernelCache.dir
}

func newVMEnv(t *testing.T) *vmEnv {
	t.Helper()
	needVMHost(t)
	return newVMEnvKernel(t, pulledKernel(t))
}

// newVMEnvKernel is newVMEnv with the pulled kernel dir kdir as the only
// kernel; extra goes to the daemon's command line.
func newVMEnvKernel(t *testing.T, kdir string, extra ...string) *vmEnv {
	t.Helper()
	dir := t.TempDir()
	state, run := filepath.Join(dir, "state"), filepath.Join(dir, "run")
	if err := os.MkdirAll(filepath.Join(state, "kernels"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", kdir, filepath.Join(state, "kernels")).CombinedOutput(); err != nil {
		t.Fatalf("copy kernel: %v %s", err, out)
	}
	ns := fmt.Sprintf("bgt%d-%d", os.Getpid(), time.Now().UnixNano()%100000)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	exec.Command("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up").Run()
	t.Cleanup(func() {
		// Kill what runs in the namespace (VMMs) before deleting it.
		out, _ := exec.Command("ip", "netns", "pids", ns).Output()
		for _, p := range strings.Fields(string(out)) {
			exec.Command("kill", "-9", p).Run()
		}
		time.Sleep(200 * time.Millisecond)
		exec.Command("ip", "netns", "del", ns).Run()
	})
	d := startDaemonProcArgs(t, state, run, append([]string{"--netns", ns}, extra...)...)
	env := &vmEnv{daemonProc: d, ns: ns, runDir: run}
	layout := filepath.Join(dir, "bb")
	img, err := testfixture.BusyboxImage("e2e")
	if err != nil {
		t.Fatal(err)
	}
	if err := testfixture.WriteLayout(layout, img); err != nil {
		t.Fatal(err)
	}
	env.mustRun(t, "image", "import", layout, "--name", "busybox")
	var ks []map[string]any
	json.Unmarshal([]byte(env.mustRun(t, "kernel", "ls", "-o", "json")), &ks)
	if len(ks) != 1 {
		t.Fatalf("kernels: %v", ks)
	}
	env.release = ks[0]["release"].(string)
	return env
}

func (e *vmEnv) mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, stderr, err := e.run(args...)
	if err != nil {
		t.Fatalf("banger %s: %v\nstdout: %s\nstderr: %s\ndaemon log tail: %s", strings.Join(args, " "), err, out, stderr, tail(e.log.String(), 20))
	}
	return out
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err == nil {
		return 0
	}
	return -1
}

func TestVMRunCommandAndExitCode(t *testing.T) {
	e := newVMEnv(t)
	out := e.mustRun(t, "vm", "run", "--image", "busybox", "--rm", "--", "uname", "-r")
	if strings.TrimSpace(out) != e.release {
		t.Fatalf("uname -r = %q, want %q", out, e.release)
	}
	_, _, err := e.run("vm", "run", "--image", "busybox", "--rm", "--", "sh", "-c", "exit 7")
	if exitCode(err) != 7 {
		t.Fatalf("exit status %d (%v), want 7", exitCode(err), err)
	}
	// --rm removed both.
	var vms []any
	json.Unmarshal([]byte(e.mustRun(t, "vm", "ls", "-a", "-o", "json")), &vms)
	if len(vms) != 0 {
		t.Fatalf("--rm left VMs: %v", vms)
	}
}

func TestVMPersistenceAndIsolation(t *testing.T) {
	e := newVMEnv(t)
	e.mustRun(t, "vm", "create", "--image", "busybox", "--name", "p1")
	e.mustRun(t, "vm", "exec", "p1", "--", "sh", "-c", "echo work > /root/f && echo sys > /etc/x")
	e.mustRun(t, "vm", "stop", "p1")
	e.mustRun(t, "vm", "start", "p1")
	if out := e.mustRun(t, "vm", "exec", "p1", "--", "cat", "/root/f", "/etc/x"); out != "work\nsys\n" {
		t.Fatalf("after restart: %q", out)
	}
	e.mustRun(t, "vm", "create", "--image", "busybox", "--name", "p2")
	out, _, _ := e.run("vm", "exec", "p2", "--", "sh", "-c", "ls /root/f /etc/x 2>&1; true")
	if strings.Count(out, "No such file") != 2 {
		t.Fatalf("new VM sees another VM's files: %q", out)
	}
	// Stdin passes through exec.
	cmd := exec.Command(bangerBin, "--socket", e.socket, "vm", "exec", "p2", "--", "cat")
	cmd.Stdin = strings.NewReader("piped\n")
	if b, err := cmd.Output(); err != nil || string(b) != "piped\n" {
		t.Fatalf("stdin passthrough: %q %v", b, err)
	}
	e.mustRun(t, "vm", "rm", "-f", "p1", "p2")
}

func TestVMParallelCreates(t *testing.T) {
	e := newVMEnv(t)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if _, stderr, err := e.run("vm", "create", "--image", "busybox", "--name", fmt.Sprintf("par-%d", i)); err != nil {
				errs <- fmt.Errorf("par-%d: %v %s", i, err, stderr)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var vms []map[string]any
	json.Unmarshal([]byte(e.mustRun(t, "vm", "ls", "-o", "json")), &vms)
	ips, macs := map[any]bool{}, map[any]bool{}
	for _, v := range vms {
		if v["state"] != "running" {
			t.Fatalf("not running: %v", v)
		}
		ips[v["guest_ip"]], macs[v["mac"]] = true, true
	}
	if len(vms) != 4 || len(ips) != 4 || len(macs) != 4 {
		t.Fatalf("%d vms, %d ips, %d macs", len(vms), len(ips), len(macs))
	}
	for i := 0; i < 4; i++ {
		name := fmt.Sprintf("par-%d", i)
		if out := e.mustRun(t, "vm", "exec", name, "--", "hostname"); strings.TrimSpace(out) != name {
			t.Fatalf("hostname %q want %q", out, name)
		}
	}
}

func TestVMSurvivesDaemonKill(t *testing.T) {
	e := newVMEnv(t)
	e.mustRun(t, "vm", "create", "--image", "busybox", "--name", "surv")
	e.cmd.Process.Signal(syscall.SIGKILL)
	e.cmd.Wait()
	d2 := startDaemonProcArgs(t, e.stateDir, e.runDir, "--netns", e.ns)
	e.daemonProc = d2
	if out := e.mustRun(t, "vm", "exec", "surv", "--", "echo", "alive"); out != "alive\n" {
		t.Fatalf("after daemon restart: %q", out)
	}
	var vm map[string]any
	json.Unmarshal([]byte(e.mustRun(t, "vm", "inspect", "surv", "-o", "json")), &vm)
	pid := int(vm["pid"].(float64))
	syscall.Kill(pid, syscall.SIGKILL)
	deadline := time.Now().Add(5 * time.Second)
	for {
		json.Unmarshal([]byte(e.mustRun(t, "vm", "inspect", "surv", "-o", "json")), &vm)
		if vm["state"] == "stopped" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("VMM killed, state still %v after 5s", vm["state"])
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestVMBootFailureShowsConsole(t *testing.T) {
	e := newVMEnv(t)
	// A kernel without its modules cannot see its virtio disks: banger-init
	// fails and the error must carry the console tail, not hang.
	kdir := filepath.Join(e.stateDir, "kernels", "debian-cloud-amd64")
	e.mustRun(t, "kernel", "import", "--name", "nomods", "--kernel", filepath.Join(kdir, "vmlinuz"))
	start := time.Now()
	_, stderr, err := e.run("vm", "create", "--image", "busybox", "--kernel", "nomods", "--name", "broken")
	if err == nil {
		t.Fatal("boot without modules succeeded")
	}
	if !strings.Contains(stderr, "last lines of the console") || !strings.Contains(stderr, "banger-init") {
		t.Fatalf("error lacks the console tail: %s", stderr)
	}
	t.Logf("failed after %s: %s", time.Since(start).Round(time.Second), tail(stderr, 5))
	var vm map[string]any
	json.Unmarshal([]byte(e.mustRun(t, "vm", "inspect", "broken", "-o", "json")), &vm)
	if vm["state"] != "error" {
		t.Fatalf("state %v, want error", vm["state"])
	}
	if logs := e.mustRun(t, "vm", "logs", "broken"); !strings.Contains(logs, "banger-init: boot failed") {
		t.Fatalf("vm logs lacks the console: %q", logs)
	}
	_ = context.Background
}

// nsRun runs a command inside the env's network namespace.
func (e *vmEnv) nsRun(t *testing.T, args ...string) string {
	t.Helper()
	out, _ := exec.Command("ip", append([]string{"netns", "exec", e.ns}, args...)...).CombinedOutput()
	return string(out)
}

// inst is the names of the env daemon's host objects (taps, tables).
func (e *vmEnv) inst() instance.Names { return instance.For(e.stateDir) }

func (e *vmEnv) inspect(t *testing.T, name string) map[string]any {
	t.Helper()
	var vm map[string]any
	json.Unmarshal([]byte(e.mustRun(t, "vm", "inspect", name, "-o", "json")), &vm)
	return vm
}

func TestNetworkNoLeaksAfterCycles(t *testing.T) {
	testenv.RequireTool(t, "dig", "nft", "ss")
	e := newVMEnv(t)
	var ips []string
	for i := 0; i < 20; i++ {
		name := fmt.Sprintf("cyc-%d", i)
		e.mustRun(t, "vm", "create", "--image", "busybox", "--nat", "-p", "127.0.0.1:18080:80", "--name", name)
		vm := e.inspect(t, name)
		ip := vm["guest_ip"].(string)
		ips = append(ips, ip)
		if i == 0 {
			// While running: DNS answers, the NAT set holds it, the port listens.
			if out := e.nsRun(t, "dig", "+short", "@172.30.0.1", name+".vm"); strings.TrimSpace(out) != ip {
				t.Fatalf("dig %s.vm = %q, want %s", name, out, ip)
			}
			if out := e.nsRun(t, "nft", "list", "set", "inet", e.inst().Table, "nat_guests"); !strings.Contains(out, ip) {
				t.Fatalf("nat_guests lacks %s: %s", ip, out)
			}
			if out := e.nsRun(t, "ss", "-ltn"); !strings.Contains(out, "127.0.0.1:18080") {
				t.Fatalf("forward not listening: %s", out)
			}
		}
		e.mustRun(t, "vm", "rm", "-f", name)
	}
	if out := e.nsRun(t, "ip", "-o", "link"); strings.Contains(out, e.inst().TapPrefix) {
		t.Fatalf("taps left: %s", out)
	}
	out := e.nsRun(t, "nft", "list", "set", "inet", e.inst().Table, "nat_guests")
	for _, ip := range ips {
		if strings.Contains(out, ip+",") || strings.Contains(out, ip+" ") {
			t.Fatalf("NAT set still holds %s: %s", ip, out)
		}
	}
	if out := e.nsRun(t, "ss", "-ltn"); strings.Contains(out, ":18080") {
		t.Fatalf("forward port still listening: %s", out)
	}
	if out := e.nsRun(t, "dig", "@172.30.0.1", "cyc-0.vm"); !strings.Contains(out, "NXDOMAIN") {
		t.Fatalf("DNS record left: %s", out)
	}
}

func TestNATVMsAfterDaemonKill(t *testing.T) {
	testenv.RequireTool(t, "nft")
	e := newVMEnv(t)
	e.mustRun(t, "vm", "create", "--image", "busybox", "--nat", "--name", "n1")
	e.mustRun(t, "vm", "create", "--image", "busybox", "--nat", "--name", "n2")
	v1, v2 := e.inspect(t, "n1"), e.inspect(t, "n2")
	e.cmd.Process.Signal(syscall.SIGKILL)
	e.cmd.Wait()
	syscall.Kill(int(v1["pid"].(float64)), syscall.SIGKILL)
	time.Sleep(500 * time.Millisecond)
	e.daemonProc = startDaemonProcArgs(t, e.stateDir, e.runDir, "--netns", e.ns)
	if st := e.inspect(t, "n1")["state"]; st != "stopped" {
		t.Fatalf("dead VM state %v", st)
	}
	links := e.nsRun(t, "ip", "-o", "link")
	if n := strings.Count(links, e.inst().TapPrefix); n != 1 {
		t.Fatalf("want exactly n2's tap, got %d: %s", n, links)
	}
	set := e.nsRun(t, "nft", "list", "set", "inet", e.inst().Table, "nat_guests")
	if strings.Contains(set, v1["guest_ip"].(string)+" ") || strings.Contains(set, v1["guest_ip"].(string)+",") || !strings.Contains(set, v2["guest_ip"].(string)) {
		t.Fatalf("NAT set after restart: %s", set)
	}
	if out := e.mustRun(t, "vm", "exec", "n2", "--", "echo", "ok"); out != "ok\n" {
		t.Fatalf("n2 after restart: %q", out)
	}
}

// cliUserKey is the public key (type and base64) of the CLI's own key.
func cliUserKey(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(os.Getenv("XDG_CONFIG_HOME"), "banger", "id_ed25519"))
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	return f[0] + " " + f[1]
}

// TestKeyRotation: a VM created before `ssh-key rotate` gets the new key
// at its next start (its own keys kept); a VM created after has it at once.
func TestKeyRotation(t *testing.T) {
	e := newVMEnv(t)
	e.mustRun(t, "vm", "create", "--image", "busybox", "--name", "old")
	e.mustRun(t, "vm", "exec", "old", "--", "sh", "-c", "echo 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGuserownkeyuserownkeyuserownkeyuserownkey00 me@laptop' >> /root/.ssh/authorized_keys")
	e.mustRun(t, "vm", "stop", "old")
	e.mustRun(t, "ssh-key", "rotate")
	e.mustRun(t, "vm", "start", "old")
	keys := e.mustRun(t, "vm", "exec", "old", "--", "cat", "/root/.ssh/authorized_keys")
	pub, err := os.ReadFile(filepath.Join(e.stateDir, "ssh", "id_ed25519.pub"))
	if err != nil {
		t.Fatal(err)
	}
	// The CLI's own key (authorized on first use) is a user key too.
	cli := cliUserKey(t)
	if !strings.Contains(keys, strings.TrimSpace(string(pub))) || !strings.Contains(keys, "me@laptop") || !strings.Contains(keys, cli) || strings.Count(keys, "ssh-ed25519") != 3 {
		t.Fatalf("authorized_keys after rotation (want the new daemon key, the user's and the CLI's, not the old daemon key):\n%s", keys)
	}
	// A running VM gets the new key pushed at rotation and loses the old.
	e.mustRun(t, "vm", "create", "--image", "busybox", "--name", "live")
	e.mustRun(t, "ssh-key", "rotate")
	pub2, _ := os.ReadFile(filepath.Join(e.stateDir, "ssh", "id_ed25519.pub"))
	if got := e.mustRun(t, "vm", "exec", "live", "--", "cat", "/root/.ssh/authorized_keys"); !strings.Contains(got, strings.TrimSpace(string(pub2))) || !strings.Contains(got, cli) || strings.Count(got, "ssh-ed25519") != 2 {
		t.Fatalf("running VM after rotation: %q, want only %q and the CLI's key", got, pub2)
	}
	pub = pub2
	e.mustRun(t, "vm", "create", "--image", "busybox", "--name", "new")
	if got := e.mustRun(t, "vm", "exec", "new", "--", "cat", "/root/.ssh/authorized_keys"); !strings.Contains(got, strings.TrimSpace(string(pub))) || !strings.Contains(got, cli) || strings.Count(got, "ssh-ed25519") != 2 {
		t.Fatalf("new VM keys %q, want exactly the new daemon key and the CLI's", got)
	}
}

// TestGuestCannotSpoof: a guest without NAT that takes a NAT guest's
// address gets nothing through (the bridge filter counts the drops), while
// the two still reach each other from their own addresses; vmdns answers
// .vm names to it but refuses outside names; the filter entries follow
// the VMs through a daemon restart and go with them.
func TestGuestCannotSpoof(t *testing.T) {
	testenv.RequireTool(t, "nft")
	e := newVMEnv(t)
	e.mustRun(t, "vm", "create", "--image", "busybox", "--nat", "--name", "sn")
	e.mustRun(t, "vm", "create", "--image", "busybox", "--name", "sp")
	nIP, pIP := e.inspect(t, "sn")["guest_ip"].(string), e.inspect(t, "sp")["guest_ip"].(string)

	ping := func(from, to string) {
		t.Helper()
		e.mustRun(t, "vm", "exec", from, "--", "ping", "-c", "1", "-W", "5", to)
	}
	ping("sp", nIP)
	ping("sn", pIP)
	ping("sp", "172.30.0.1")

	if out := e.mustRun(t, "vm", "exec", "sp", "--", "nslookup", "sn.vm", "172.30.0.1"); !strings.Contains(out, nIP) {
		t.Fatalf("sp: nslookup sn.vm:\n%s", out)
	}
	if out, _, _ := e.run("vm", "exec", "sp", "--", "nslookup", "example.com", "172.30.0.1"); !strings.Contains(out, "REFUSED") {
		t.Fatalf("sp (no NAT): nslookup example.com was not refused:\n%s", out)
	}

	dropIP := func() int {
		t.Helper()
		out := e.nsRun(t, "nft", "list", "counter", "bridge", e.inst().Table, "drop_ip")
		var n int
		if i := strings.Index(out, "packets "); i >= 0 {
			fmt.Sscan(out[i+len("packets "):], &n)
		}
		return n
	}
	before := dropIP()
	spoof := fmt.Sprintf("dev=$(ls /sys/class/net | grep -v '^lo$' | head -1); ip addr add %s/32 dev $dev && "+
		"if ping -c 2 -W 2 -I %s 172.30.0.1; then echo REACHED; fi", nIP, nIP)
	if out, _, _ := e.run("vm", "exec", "sp", "--", "sh", "-c", spoof); strings.Contains(out, "REACHED") {
		t.Fatalf("sp reached the host from sn's address:\n%s", out)
	}
	if after := dropIP(); after <= before {
		t.Fatalf("drop_ip counter %d -> %d: the spoofed pings were not dropped by the bridge filter", before, after)
	}
	// While it held sn's address, sp's own ARP for the gateway carried that
	// address as sender and was dropped: give the address back, forget
	// the half-resolved neighbours, and check sp is served again.
	e.mustRun(t, "vm", "exec", "sp", "--", "sh", "-c", fmt.Sprintf("dev=$(ls /sys/class/net | grep -v '^lo$' | head -1); ip addr del %s/32 dev $dev && ip neigh flush dev $dev", nIP))
	e.mustRun(t, "vm", "exec", "sp", "--", "ping", "-c", "3", "-W", "5", "172.30.0.1")

	// A restarted daemon keeps both ports allowed (and sn's traffic flowing).
	e.cmd.Process.Signal(syscall.SIGKILL)
	e.cmd.Wait()
	e.daemonProc = startDaemonProcArgs(t, e.stateDir, e.runDir, "--netns", e.ns)
	set := e.nsRun(t, "nft", "list", "set", "bridge", e.inst().Table, "guest_addrs")
	if !strings.Contains(set, nIP) || !strings.Contains(set, pIP) {
		t.Fatalf("filter entries after restart:\n%s", set)
	}
	ping("sp", nIP)
	// The first guest lookup after the restart lost its A query in 3 of 7
	// runs here (AAAA answered; an immediate retry always worked; a
	// loopback test of a fresh server's first queries lost none of 200).
	// Cause not found yet: log what we can, and allow one retry.
	if out := e.mustRun(t, "vm", "exec", "sp", "--", "nslookup", "sn.vm", "172.30.0.1"); !strings.Contains(out, nIP) {
		t.Logf("first lookup after restart failed (retrying):\n%s\ncounters: %s\nconntrack: %s", out,
			e.nsRun(t, "nft", "list", "counters", "table", "bridge", e.inst().Table), e.nsRun(t, "cat", "/proc/net/stat/nf_conntrack"))
		if out := e.mustRun(t, "vm", "exec", "sp", "--", "nslookup", "-type=a", "sn.vm", "172.30.0.1"); !strings.Contains(out, nIP) {
			t.Fatalf("sp after restart: nslookup sn.vm:\n%s\nhost dig: %s\ndaemon log:\n%s", out,
				e.nsRun(t, "dig", "@172.30.0.1", "sn.vm"), tail(e.log.String(), 30))
		}
	}

	e.mustRun(t, "vm", "rm", "-f", "sn", "sp")
	set = e.nsRun(t, "nft", "list", "set", "bridge", e.inst().Table, "guest_addrs")
	if strings.Contains(set, nIP) || strings.Contains(set, pIP) {
		t.Fatalf("filter entries left after rm:\n%s", set)
	}
}
