package vmm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// probeOnly is a Driver whose Probe answer is fixed: Select only probes.
type probeOnly struct {
	name string
	p    ProbeResult
}

func (d probeOnly) Name() string                                { return d.name }
func (d probeOnly) Probe() ProbeResult                          { return d.p }
func (d probeOnly) Start(context.Context, Spec) (Handle, error) { return nil, errors.New("no") }
func (d probeOnly) Adopt(StateInfo) (Handle, error)             { return nil, errors.New("no") }
func (d probeOnly) Capabilities() Capabilities                  { return Capabilities{Agent: AgentSerial} }

func TestSelect(t *testing.T) {
	fcOK := probeOnly{"firecracker", ProbeResult{Usable: true, Accel: "kvm", Reason: "kvm"}}
	fcNo := probeOnly{"firecracker", ProbeResult{Reason: "no /dev/kvm; firecracker binary not found"}}
	qOK := probeOnly{"qemu", ProbeResult{Usable: true, Accel: "tcg", Reason: "tcg"}}
	qNo := probeOnly{"qemu", ProbeResult{Reason: "qemu-system-x86_64 not found"}}

	for _, c := range []struct {
		pref    string
		drivers []Driver
		want    string // driver name, or "" for an error
		errHas  []string
	}{
		{"auto", []Driver{fcOK, qOK}, "firecracker", nil},
		{"", []Driver{fcNo, qOK}, "qemu", nil},
		{"auto", []Driver{fcNo, qNo}, "", []string{"no /dev/kvm", "qemu-system-x86_64 not found"}},
		{"qemu", []Driver{fcOK, qOK}, "qemu", nil},
		{"firecracker", []Driver{fcNo, qOK}, "", []string{"firecracker", "no /dev/kvm"}},
		{"qemu", []Driver{fcOK, qNo}, "", []string{"qemu-system-x86_64 not found"}},
		{"vbox", []Driver{fcOK, qOK}, "", []string{`"vbox"`, "firecracker, qemu"}},
		{"auto", nil, "", []string{"no vmm"}},
		// Hardware acceleration wins over order: a tcg driver listed first
		// is passed over for a kvm one.
		{"auto", []Driver{qOK, fcOK}, "firecracker", nil},
	} {
		d, why, err := Select(c.pref, c.drivers...)
		if c.want == "" {
			if err == nil {
				t.Errorf("Select(%q) = %s, want error", c.pref, d.Name())
				continue
			}
			for _, h := range c.errHas {
				if !strings.Contains(err.Error(), h) {
					t.Errorf("Select(%q) error %q lacks %q", c.pref, err, h)
				}
			}
			continue
		}
		if err != nil || d.Name() != c.want || why == "" {
			t.Errorf("Select(%q) = %v, %q, %v; want %s", c.pref, d, why, err, c.want)
		}
	}
	_, why, _ := Select("auto", fcNo, qOK)
	if !strings.Contains(why, "no /dev/kvm") || !strings.Contains(why, "qemu usable") {
		t.Errorf("auto why %q: want both drivers' reasons", why)
	}
}

func TestStartTimeAndAttach(t *testing.T) {
	dir := t.TempDir()
	p, err := Spawn(SpawnConfig{Path: "/bin/sh", Args: []string{"-c", "echo out; echo err >&2; exec sleep 1000"},
		Stdout: filepath.Join(dir, "out"), Stderr: filepath.Join(dir, "err")})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Kill()
	// Spawn returns after fork; wait for the exec of sleep so /proc/<pid>/
	// cmdline is stable (it reads empty mid-execve).
	for i := 0; i < 100; i++ {
		if cl, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.PID())); bytes.HasPrefix(cl, []byte("sleep")) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	st, err := StartTime(p.PID())
	if err != nil || st != p.StartTime() || st == 0 {
		t.Fatalf("StartTime = %d, %v; spawn recorded %d", st, err, p.StartTime())
	}
	// Its own session: the daemon's process group signals miss it.
	if sid, _ := sessionID(p.PID()); sid != p.PID() {
		t.Errorf("session id %d, want %d (setsid)", sid, p.PID())
	}
	if _, err := Attach(p.PID(), st+1, ""); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Attach with a wrong start time: %v", err)
	}
	if _, err := Attach(p.PID(), st, "qmp.sock"); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Attach of a process not mentioning the socket: %v", err)
	}
	a, err := Attach(p.PID(), st, "sleep")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Kill(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := p.Wait(ctx); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("spawned Wait: %v, want signal: killed", err)
	}
	if err := a.Wait(ctx); err != nil {
		t.Errorf("adopted Wait: %v", err)
	}
	if _, err := Attach(p.PID(), st, ""); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Attach of a dead pid: %v", err)
	}
	for f, want := range map[string]string{"out": "out\n", "err": "err\n"} {
		if b, _ := os.ReadFile(filepath.Join(dir, f)); string(b) != want {
			t.Errorf("%s = %q, want %q", f, b, want)
		}
	}
	if _, err := Spawn(SpawnConfig{Path: "/nonexistent/vmm", Stdout: filepath.Join(dir, "x")}); err == nil {
		t.Error("Spawn of a missing binary succeeded")
	}
}

const spawnerEnv = "BANGER_TEST_SPAWNER"

func TestMain(m *testing.M) {
	if dir := os.Getenv(spawnerEnv); dir != "" {
		// A stand-in daemon: spawn a "VMM", report it, wait to be killed.
		p, err := Spawn(SpawnConfig{Path: "/bin/sleep", Args: []string{"1000"}, Stdout: filepath.Join(dir, "vmm.log")})
		if err != nil {
			os.Exit(1)
		}
		fmt.Printf("%d %d\n", p.PID(), p.StartTime())
		select {}
	}
	os.Exit(m.Run())
}

// TestSurvivesDaemon: a daemon that Spawned a VMM is SIGKILLed together
// with its whole process group; the VMM keeps running and a new daemon
// adopts it.
func TestSurvivesDaemon(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), spawnerEnv+"="+t.TempDir())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pid int
	var start uint64
	if _, err := fmt.Fscan(out, &pid, &start); err != nil {
		cmd.Process.Kill()
		t.Fatalf("spawner: %v", err)
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // the daemon's whole group
	cmd.Wait()
	p, err := Attach(pid, start, "sleep")
	if err != nil {
		t.Fatalf("VMM did not survive its daemon: %v", err)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
}

func sessionID(pid int) (int, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return strconv.Atoi(f[3]) // field 6: session
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "f")
	os.WriteFile(f, nil, 0o644)
	ok := Spec{Dir: dir, RuntimeDir: dir, VCPU: 1, MemoryMiB: 128, Initrd: f, Disks: []Disk{{Path: f, Serial: "banger-modules"}},
		Net: &NetConfig{Tap: "bgr1", MAC: "02:42:00:00:00:01"}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*Spec){
		"relative dir": func(s *Spec) { s.Dir = "vm" },
		"no runtime":   func(s *Spec) { s.RuntimeDir = "" },
		"vcpu":         func(s *Spec) { s.VCPU = 33 },
		"initrd":       func(s *Spec) { s.Initrd = dir },
		"tap":          func(s *Spec) { s.Net.Tap = "this-name-is-too-long" },
		"newline":      func(s *Spec) { s.Cmdline = "a\nb" },
		"long serial":  func(s *Spec) { s.Disks[0].Serial = "banger-serial-too-long" },
		"comma serial": func(s *Spec) { s.Disks[0].Serial = "a,b" },
	} {
		s := ok
		n := *ok.Net
		s.Net = &n
		s.Disks = append([]Disk(nil), ok.Disks...)
		mut(&s)
		if err := s.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
