package firecracker

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/testenv"
	"banger/internal/vmm"
)

const fakeEnv = "BANGER_TEST_FAKE_FIRECRACKER"

func TestMain(m *testing.M) {
	if os.Getenv(fakeJailerEnv) == "1" {
		os.Exit(runFakeJailer(os.Args[1:]))
	}
	if os.Getenv(fakeEnv) == "1" {
		os.Exit(runFakeBinary(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// testSpec makes a Spec whose files exist, with a short runtime dir.
func testSpec(t *testing.T) vmm.Spec {
	t.Helper()
	dir := t.TempDir()
	rt, err := os.MkdirTemp("/tmp", "bgr-fc-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(rt) })
	touch := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return vmm.Spec{
		ID: "id1", Name: "vm1", Dir: filepath.Join(dir, "vm"), RuntimeDir: rt,
		VCPU: 2, MemoryMiB: 256,
		Vmlinux: touch("vmlinux"), Initrd: touch("initrd.img"),
		Cmdline: "banger.ip=172.30.0.2/24 banger.agent=vsock",
		Disks: []vmm.Disk{
			{Path: touch("rootfs.ext4"), ReadOnly: true},
			{Path: touch("system.cow")},
			{Path: touch("root.ext4")},
		},
		Net: &vmm.NetConfig{Tap: "bgr123", MAC: "02:42:ac:1e:00:02"},
		CID: 0x10002,
	}
}

// serveFake runs the stand-in API server on a unix socket in-process.
func serveFake(t *testing.T, sock string) *fakeFirecracker {
	t.Helper()
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	fake := newFake(&bytes.Buffer{}, nil, filepath.Dir(sock))
	srv := &http.Server{Handler: fake}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close(); fake.close() })
	return fake
}

func TestConfigureContract(t *testing.T) {
	s := testSpec(t)
	os.MkdirAll(s.Dir, 0o750)
	p := pathsFor(s)
	for _, f := range []string{p.log, p.metrics} {
		os.WriteFile(f, nil, 0o640)
	}
	fake := serveFake(t, p.api)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := Configure(ctx, NewClient(p.api), s); err != nil {
		t.Fatalf("Configure: %v (violations %v)", err, fake.violations)
	}
	want := []string{
		"PUT /logger", "PUT /metrics", "PUT /machine-config", "PUT /boot-source",
		"PUT /drives/vda", "PUT /drives/vdb", "PUT /drives/vdc",
		"PUT /network-interfaces/eth0", "PUT /vsock", "PUT /actions",
	}
	if strings.Join(fake.requests, ",") != strings.Join(want, ",") {
		t.Fatalf("requests:\n%v\nwant\n%v", fake.requests, want)
	}
	b := fake.bodies
	if b["/boot-source"]["kernel_image_path"] != s.Vmlinux || b["/boot-source"]["initrd_path"] != s.Initrd {
		t.Errorf("boot-source %v", b["/boot-source"])
	}
	args := b["/boot-source"]["boot_args"].(string)
	for _, w := range []string{"console=ttyS0", "reboot=k", "panic=1", "pci=off", s.Cmdline} {
		if !strings.Contains(args, w) {
			t.Errorf("boot_args %q lack %q", args, w)
		}
	}
	if b["/drives/vda"]["is_read_only"] != true || b["/drives/vdb"]["is_read_only"] != false ||
		b["/drives/vdc"]["path_on_host"] != "drive-vdc" || b["/drives/vda"]["is_root_device"] != false {
		t.Errorf("drives %v %v %v", b["/drives/vda"], b["/drives/vdb"], b["/drives/vdc"])
	}
	if l, _ := os.Readlink(filepath.Join(s.RuntimeDir, "drive-vdc")); l != s.Disks[2].Path {
		t.Errorf("drive-vdc links to %q, want %s", l, s.Disks[2].Path)
	}
	if b["/network-interfaces/eth0"]["host_dev_name"] != "bgr123" || b["/network-interfaces/eth0"]["guest_mac"] != s.Net.MAC {
		t.Errorf("network %v", b["/network-interfaces/eth0"])
	}
	if b["/vsock"]["uds_path"] != p.vsock || b["/vsock"]["guest_cid"].(interface{ String() string }).String() != "65538" {
		t.Errorf("vsock %v", b["/vsock"])
	}
	if b["/logger"]["log_path"] != p.log || b["/metrics"]["metrics_path"] != p.metrics {
		t.Errorf("logger %v metrics %v", b["/logger"], b["/metrics"])
	}

	// Hybrid vsock to the agent port.
	c, err := DialHybridVsock(ctx, p.vsock, vmm.AgentPort)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if l, err := r.ReadString('\n'); l != "hello\n" || err != nil {
		t.Fatalf("agent greeting %q, %v", l, err)
	}
	// A port nobody listens on: Firecracker closes without OK.
	if _, err := DialHybridVsock(ctx, p.vsock, 9); err == nil {
		t.Fatal("CONNECT to a closed port succeeded")
	}

	// Pre-boot only after boot.
	if err := NewClient(p.api).Put(ctx, "/machine-config", MachineConfig{VCPUCount: 1, MemSizeMiB: 128}); err == nil {
		t.Fatal("machine-config after InstanceStart accepted")
	}
}

// TestFakeRejects shows the stand-in catches the mistakes it is there for.
func TestFakeRejects(t *testing.T) {
	s := testSpec(t)
	p := pathsFor(s)
	serveFake(t, p.api)
	c := NewClient(p.api)
	ctx := context.Background()
	bad := []struct {
		path string
		body any
	}{
		{"/actions", InstanceAction{ActionType: "InstanceStart"}}, // before boot-source
		{"/actions", map[string]any{"action_type": "Reboot"}},
		{"/machine-config", map[string]any{"vcpu_count": 2}},                            // mem_size_mib missing
		{"/machine-config", map[string]any{"vcpu_count": "2", "mem_size_mib": 128}},     // string for integer
		{"/machine-config", map[string]any{"vcpu_count": 2, "mem_size_mib": 1, "x": 1}}, // unknown field
		{"/drives/vda", Drive{DriveID: "vdb", PathOnHost: s.Disks[0].Path}},             // id mismatch
		{"/drives/vda", Drive{DriveID: "vda", PathOnHost: "/nonexistent"}},
		{"/vsock", Vsock{GuestCID: 2, UDSPath: p.vsock}},
		{"/logger", Logger{LogPath: filepath.Join(s.Dir, "not-created.log")}},
		{"/boot", BootSource{KernelImagePath: s.Vmlinux}},
	}
	for _, b := range bad {
		err := c.Put(ctx, b.path, b.body)
		var ae *APIError
		if !errors.As(err, &ae) || ae.Status != 400 || ae.Fault == "" {
			t.Errorf("PUT %s %+v: %v, want a 400 with a fault message", b.path, b.body, err)
		}
	}
}

func TestProbe(t *testing.T) {
	d := New(Options{Binary: "no-such-firecracker-binary"})
	p := d.Probe()
	if p.Usable || !strings.Contains(p.Reason, "no-such-firecracker-binary binary not found") {
		t.Fatalf("probe %+v", p)
	}
	t.Logf("probe here: %s", p.Reason)
	if d.AgentMode() != vmm.AgentVsock {
		t.Fatal(d.AgentMode())
	}
	d = New(Options{})
	d.kvm = func() (bool, string) { return false, "no /dev/kvm" }
	if p := d.Probe(); p.Usable || !strings.Contains(p.Reason, "no /dev/kvm") {
		t.Fatalf("probe %+v", p)
	}
	if _, err := d.Start(context.Background(), testSpec(t)); err == nil || !strings.Contains(err.Error(), "no /dev/kvm") {
		t.Fatalf("Start on an unusable host: %v", err)
	}
}

// TestDriverLifecycle drives the real spawn path with the test binary
// re-executed as a stand-in "firecracker": Start (spawn, API config,
// InstanceStart), console on stdout, agent over hybrid vsock, Adopt from a
// fresh driver, Stop via SendCtrlAltDel, Adopt of the stopped VM fails.
func TestDriverLifecycle(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(fakeEnv, "1")
	newDriver := func() *Driver {
		d := New(Options{Binary: exe, StopTimeout: time.Minute})
		d.kvm = func() (bool, string) { return true, "stand-in" }
		return d
	}
	d := newDriver()
	s := testSpec(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h, err := d.Start(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Kill()
	// The console reaches the log through the driver's FIFO copy, a
	// goroutine: give it a moment.
	var b []byte
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if b, _ = os.ReadFile(s.Console()); strings.Contains(string(b), "guest booted") {
			break
		}
	}
	if !strings.Contains(string(b), "guest booted") {
		t.Errorf("console.log %q: want the VMM's stdout", b)
	}
	if _, err := d.Start(ctx, s); err == nil || !strings.Contains(err.Error(), "already serves") {
		t.Errorf("second Start of the same VM: %v", err)
	}

	c, err := h.AgentConn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	if l, _ := r.ReadString('\n'); l != "hello\n" {
		t.Fatalf("agent said %q", l)
	}
	c.Write([]byte("ping\n"))
	if l, _ := r.ReadString('\n'); l != "ping\n" {
		t.Fatalf("agent echoed %q", l)
	}
	c.Close()

	st, _ := h.State()
	if st.PID != h.PID() || st.Driver != Name || st.AgentSocket == "" || st.CID != s.CID {
		t.Fatalf("state %+v", st)
	}
	h2, err := newDriver().Adopt(st)
	if err != nil {
		t.Fatal(err)
	}
	if h2.PID() != h.PID() {
		t.Fatalf("adopted pid %d", h2.PID())
	}
	if err := h2.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	// The stand-in exits 0 on SendCtrlAltDel: no kill was needed.
	if err := h.Wait(ctx); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if b, _ := os.ReadFile(s.Console()); !strings.Contains(string(b), "powered off") {
		t.Errorf("console.log %q: want the power-off line", b)
	}
	if _, err := d.Adopt(st); !errors.Is(err, vmm.ErrNotRunning) {
		t.Fatalf("adopt after stop: %v", err)
	}
}

// TestDriverJailed drives the jailer path with stand-ins for the jailer
// and Firecracker (this test binary): the jailer's documented command line
// (checked by the stand-in), every file Firecracker is given inside the
// chroot and usable by the jail's uid:gid (writable disks its own, shared
// read-only files group-readable), the API and vsock sockets in the jail,
// Adopt by the --id the jailer passes on, the agent, Stop. And the console
// through the FIFO: a guest writing 1 MiB leaves at most two generations
// of the cap on disk.
func TestDriverJailed(t *testing.T) {
	testenv.RequireRoot(t, "to hand the jail's files to another uid")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(fakeJailerEnv, "1")
	const uid, gid = 65534, 65534
	const capBytes = 64 << 10
	newDriver := func() *Driver {
		d := New(Options{Binary: exe, Jailer: exe, JailUID: uid, JailGID: gid, StopTimeout: time.Minute, ConsoleMaxBytes: capBytes})
		d.kvm = func() (bool, string) { return true, "stand-in" }
		return d
	}
	d := newDriver()
	s := testSpec(t)
	s.Cmdline += " fake.flood=1048576"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h, err := d.Start(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Kill()
	if err := h.(vmm.Snapshotter).SaveState(ctx, nil); !errors.Is(err, errJailedSnapshot) {
		t.Fatalf("a jailed snapshot: %v, want it refused (its paths are outside the jail)", err)
	}
	st, _ := h.State()
	jailRoot := filepath.Join(s.Dir, "jail", filepath.Base(exe), "id1", "root")
	if st.ControlSocket != filepath.Join(jailRoot, "run", APISocket) || st.AgentSocket != filepath.Join(jailRoot, "run", VsockSocket) {
		t.Fatalf("sockets %q %q: want them in the jail %s", st.ControlSocket, st.AgentSocket, jailRoot)
	}
	cl, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", h.PID()))
	if !bytes.Contains(cl, []byte("--id\x00id1\x00")) || bytes.Contains(cl, []byte("--chroot-base-dir")) {
		t.Fatalf("Firecracker's command line %q: want the jailer's --id, no jailer arguments", cl)
	}
	for i, disk := range s.Disks {
		fi, err := os.Stat(disk.Path)
		if err != nil {
			t.Fatal(err)
		}
		sys := fi.Sys().(*syscall.Stat_t)
		if sys.Nlink != 2 {
			t.Errorf("disk %d: %d links, want the VM's and the jail's", i, sys.Nlink)
		}
		if disk.ReadOnly && (sys.Gid != gid || fi.Mode().Perm() != 0o640) || !disk.ReadOnly && (sys.Uid != uid || fi.Mode().Perm() != 0o600) {
			t.Errorf("disk %d (read-only %v): owner %d:%d mode %v", i, disk.ReadOnly, sys.Uid, sys.Gid, fi.Mode().Perm())
		}
	}

	c, err := h.AgentConn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	if l, _ := r.ReadString('\n'); l != "hello\n" {
		t.Fatalf("agent said %q", l)
	}
	c.Close()

	if err := h.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.Wait(ctx); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	var total int64
	for _, p := range []string{s.Console(), s.Console() + ".1"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatalf("console generation: %v", err)
		}
		if fi.Size() > capBytes {
			t.Errorf("%s: %d bytes, over the %d cap", p, fi.Size(), capBytes)
		}
		total += fi.Size()
	}
	if total == 0 {
		t.Fatal("nothing of the console flood reached the log")
	}
	if b, _ := os.ReadFile(s.Console()); !strings.Contains(string(b), "powered off") {
		t.Errorf("console.log tail %q: want the power-off line", tail(b))
	}

	// A second boot (the jail rebuilt), adopted by a fresh driver through
	// the --id on the command line. (The two handles would share the
	// console FIFO here; a real adopting daemon is the only reader.)
	s.Cmdline = strings.ReplaceAll(s.Cmdline, " fake.flood=1048576", "")
	h, err = d.Start(ctx, s)
	if err != nil {
		t.Fatalf("second start: %v", err)
	}
	defer h.Kill()
	st, _ = h.State()
	h2, err := newDriver().Adopt(st)
	if err != nil || h2.PID() != h.PID() {
		t.Fatalf("adopt a jailed Firecracker: %v", err)
	}
	st.Mention = jailedMention("other")
	if _, err := newDriver().Adopt(st); !errors.Is(err, vmm.ErrNotRunning) {
		t.Fatalf("adopt with another VM's --id: %v", err)
	}
	if err := h2.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

func tail(b []byte) []byte {
	if len(b) > 200 {
		return b[len(b)-200:]
	}
	return b
}

// TestSnapshotContract: pause, snapshot, resume and a restore into another
// VM's directories (its own disks, tap and vsock socket, the source's
// disks gone) through the schema-checking stand-in.
func TestSnapshotContract(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := testSpec(t)
	os.MkdirAll(a.Dir, 0o750)
	pa := pathsFor(a)
	for _, f := range []string{pa.log, pa.metrics} {
		os.WriteFile(f, nil, 0o640)
	}
	fa := serveFake(t, pa.api)
	if err := Configure(ctx, NewClient(pa.api), a); err != nil {
		t.Fatal(err)
	}
	h := &handle{Base: vmm.Base{St: vmm.StateInfo{ControlSocket: pa.api, Dir: a.Dir}}}
	state, err := os.Create(filepath.Join(t.TempDir(), "state.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.SaveState(ctx, state); err == nil {
		t.Fatal("a snapshot of a running VM was accepted")
	}
	if err := h.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if p, err := h.Paused(ctx); err != nil || !p {
		t.Fatalf("Paused after Pause: %v %v", p, err)
	}
	if err := h.SaveState(ctx, state); err != nil {
		t.Fatalf("SaveState: %v (violations %v)", err, fa.violations)
	}
	if err := h.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if p, _ := h.Paused(ctx); p {
		t.Fatal("still paused after Resume")
	}
	if ents, _ := os.ReadDir(a.Dir); len(ents) != 2 { // the log and metrics only
		t.Errorf("left in the VM dir: %v", ents)
	}

	// Another VM restores it; the source's disks are gone.
	b := testSpec(t)
	b.Net.Tap = "bgr456"
	os.MkdirAll(b.Dir, 0o750)
	pb := pathsFor(b)
	for _, f := range []string{pb.log, pb.metrics} {
		os.WriteFile(f, nil, 0o640)
	}
	for _, d := range a.Disks {
		os.Remove(d.Path)
	}
	fb := serveFake(t, pb.api)
	state.Seek(0, 0)
	b.Incoming = state
	if err := Restore(ctx, NewClient(pb.api), b); err != nil {
		t.Fatalf("Restore: %v (violations %v)", err, fb.violations)
	}
	want := "PUT /logger,PUT /metrics,PUT /snapshot/load"
	if got := strings.Join(fb.requests, ","); got != want {
		t.Fatalf("restore requests %s, want %s", got, want)
	}
	load := fb.bodies["/snapshot/load"]
	if load["resume_vm"] != true || load["mem_backend"].(map[string]any)["backend_path"] != filepath.Join(b.Dir, MemoryFile) ||
		load["network_overrides"].([]any)[0].(map[string]any)["host_dev_name"] != "bgr456" {
		t.Errorf("load %v", load)
	}
	if _, err := os.Stat(filepath.Join(b.Dir, "restore-state.tmp")); err == nil {
		t.Error("the unpacked state was left behind")
	}
	c, err := DialHybridVsock(ctx, pb.vsock, vmm.AgentPort)
	if err != nil {
		t.Fatalf("agent of the restored VM: %v", err)
	}
	c.Close()

	// A load on a configured Firecracker, and a state of another format.
	if err := NewClient(pb.api).Put(ctx, "/snapshot/load", SnapshotLoadParams{SnapshotPath: "x"}); err == nil {
		t.Error("a second load was accepted")
	}
	bad := testSpec(t)
	os.MkdirAll(bad.Dir, 0o750)
	junk, _ := os.Create(filepath.Join(t.TempDir(), "junk"))
	junk.WriteString("QEVM\x00\x00\x00\x03")
	junk.Seek(0, 0)
	bad.Incoming = junk
	if err := Restore(ctx, NewClient(pathsFor(bad).api), bad); err == nil || !strings.Contains(err.Error(), "another hypervisor") {
		t.Errorf("restore of a QEMU state: %v", err)
	}
}
