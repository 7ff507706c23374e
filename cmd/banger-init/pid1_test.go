package main

import (
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/guestproto"
	"banger/internal/testenv"
)

// TestReaperAsInit runs the PID 1 reaping mode in the test process, made a
// child subreaper so orphans come to it as they would to init: every
// started command gets its own status, and orphans leave no zombie.
func TestReaperAsInit(t *testing.T) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		testenv.Skip(t, "this kernel refuses PR_SET_CHILD_SUBREAPER (Linux >= 3.4 has it): %v", err)
	}
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	procs := newProcTable(true)
	sig := make(chan os.Signal, 16)
	signal.Notify(sig, unix.SIGCHLD)
	defer signal.Stop(sig)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-sig:
				procs.reap()
			case <-stop:
				return
			}
		}
	}()

	const n = 20
	chans := make([]<-chan unix.WaitStatus, n)
	for i := range n {
		// Each leaves an orphan behind that exits after its parent.
		ch, err := procs.start(exec.Command("/bin/sh", "-c", "sleep 0.1 & exit "+strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		chans[i] = ch
	}
	for i, ch := range chans {
		select {
		case ws := <-ch:
			if ws.ExitStatus() != i {
				t.Errorf("command %d got status %d", i, ws.ExitStatus())
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("command %d: no status delivered", i)
		}
	}
	// The orphaned sleeps were reparented to us; once they exit the reaper
	// must collect them. Bounded wait for no children at all.
	for i := 0; i < 1000 && len(children(t)) > 0; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if c := children(t); len(c) > 0 {
		t.Fatalf("children left (zombies?): %v", c)
	}
}

// children lists this process's children with their state.
func children(t *testing.T) []string {
	ents, _ := os.ReadDir("/proc")
	me := strconv.Itoa(os.Getpid())
	var out []string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 2 && f[1] == me {
			out = append(out, e.Name()+":"+f[0])
		}
	}
	return out
}

func TestScanDisks(t *testing.T) {
	mk := func(t *testing.T, disks map[string]string) string {
		dir := t.TempDir()
		for name, serial := range disks {
			os.MkdirAll(filepath.Join(dir, name), 0o755)
			if serial != "" {
				os.WriteFile(filepath.Join(dir, name, "serial"), []byte(serial+"\n"), 0o644)
			}
		}
		return dir
	}
	// By attach order.
	d, ok, _ := scanDisks(mk(t, map[string]string{"vda": "", "vdb": "", "vdc": "", "sda": ""}))
	if !ok || d != (diskSet{"/dev/vda", "/dev/vdb", "/dev/vdc", ""}) {
		t.Errorf("by name: %+v %v", d, ok)
	}
	d, ok, _ = scanDisks(mk(t, map[string]string{"vda": "", "vdb": "", "vdc": "", "vdd": ""}))
	if !ok || d != (diskSet{"/dev/vda", "/dev/vdb", "/dev/vdc", "/dev/vdd"}) {
		t.Errorf("by name with modules: %+v %v", d, ok)
	}
	// Not all there yet.
	if _, ok, seen := scanDisks(mk(t, map[string]string{"vda": "", "vdb": ""})); ok || len(seen) != 2 {
		t.Errorf("two disks reported complete (seen %v)", seen)
	}
	// Serials win over names, whatever the probe order.
	d, ok, _ = scanDisks(mk(t, map[string]string{
		"vda": guestproto.SerialWork, "vdb": guestproto.SerialRootfs, "vdc": guestproto.SerialCow}))
	if !ok || d != (diskSet{"/dev/vdb", "/dev/vdc", "/dev/vda", ""}) {
		t.Errorf("by serial: %+v %v", d, ok)
	}
	d, ok, _ = scanDisks(mk(t, map[string]string{
		"vda": guestproto.SerialModules, "vdb": guestproto.SerialRootfs, "vdc": guestproto.SerialCow, "vdd": guestproto.SerialWork}))
	if !ok || d != (diskSet{"/dev/vdb", "/dev/vdc", "/dev/vdd", "/dev/vda"}) {
		t.Errorf("by serial with modules: %+v %v", d, ok)
	}
	// Firecracker reports its drive ids as serials: fall back to names.
	d, ok, _ = scanDisks(mk(t, map[string]string{"vda": "vda", "vdb": "vdb", "vdc": "vdc", "vdd": "vdd"}))
	if !ok || d != (diskSet{"/dev/vda", "/dev/vdb", "/dev/vdc", "/dev/vdd"}) {
		t.Errorf("drive ids as serials: %+v %v", d, ok)
	}
	// One serial present: wait for all three by serial.
	if _, ok, _ := scanDisks(mk(t, map[string]string{"vda": guestproto.SerialWork, "vdb": "", "vdc": ""})); ok {
		t.Error("incomplete serial set reported complete")
	}
}

func TestFindVirtioPort(t *testing.T) {
	dir := t.TempDir()
	for name, port := range map[string]string{"vport0p0": "", "vport0p1": "org.qemu.guest_agent.0", "vport0p2": guestproto.AgentSerialName} {
		os.MkdirAll(filepath.Join(dir, name), 0o755)
		os.WriteFile(filepath.Join(dir, name, "name"), []byte(port+"\n"), 0o644)
	}
	got, err := findVirtioPort(dir, guestproto.AgentSerialName, time.Second)
	if err != nil || got != "/dev/vport0p2" {
		t.Fatalf("got %q, %v", got, err)
	}
	_, err = findVirtioPort(dir, "nope", 0)
	if err == nil || !strings.Contains(err.Error(), "nope") || !strings.Contains(err.Error(), "virtio_console") {
		t.Fatalf("missing port error: %v", err)
	}
}

func TestIsExt4(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "fs.ext4")
	mkfs(t, img, "8M", "")
	if ok, err := isExt4(img); err != nil || !ok {
		t.Fatalf("mkfs.ext4 image: %v %v", ok, err)
	}
	blank := filepath.Join(dir, "blank")
	os.WriteFile(blank, make([]byte, 4096), 0o644)
	if ok, err := isExt4(blank); err != nil || ok {
		t.Fatalf("blank file: %v %v", ok, err)
	}
	short := filepath.Join(dir, "short")
	os.WriteFile(short, make([]byte, 100), 0o644)
	if _, err := isExt4(short); err == nil {
		t.Fatal("short file: want error")
	}
}

func TestHostsWithName(t *testing.T) {
	cfg := guestproto.Config{IP: netip.MustParsePrefix("172.16.0.5/24")}
	got := hostsWithName("", "web", cfg)
	want := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n172.16.0.5\tweb # banger\n"
	if got != want {
		t.Errorf("empty hosts:\n%s", got)
	}
	// Rename and re-address: banger's old line is replaced, the image's kept.
	img := "127.0.0.1 localhost\n10.1.1.1 db\n"
	once := hostsWithName(img, "web", cfg)
	twice := hostsWithName(once, "api", guestproto.Config{})
	if twice != "127.0.0.1 localhost\n10.1.1.1 db\n127.0.1.1\tapi # banger\n" {
		t.Errorf("re-applied hosts:\n%s", twice)
	}
	if hostsWithName(once, "web", cfg) != once {
		t.Error("not idempotent")
	}
}

func TestReadModuleList(t *testing.T) {
	dir := t.TempDir()
	if m, err := readModuleList(filepath.Join(dir, "missing")); err != nil || m != nil {
		t.Fatalf("missing list: %v %v", m, err)
	}
	p := filepath.Join(dir, "modules")
	os.WriteFile(p, []byte("/lib/modules/a.ko\n\n# note\n  /lib/modules/b.ko  \n"), 0o644)
	m, err := readModuleList(p)
	if err != nil || strings.Join(m, ",") != "/lib/modules/a.ko,/lib/modules/b.ko" {
		t.Fatalf("got %v %v", m, err)
	}
}
