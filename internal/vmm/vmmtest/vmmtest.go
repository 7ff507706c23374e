// Package vmmtest is a test double for a hypervisor, so the daemon's
// lifecycle (start, stop, monitor, adopt after a restart) runs in `go test`
// without root, KVM or QEMU. Its "VMM" is a real process — the test binary
// re-executed by Main — that outlives the daemon which started it and
// serves the guest side of the agent protocol on a unix socket: the
// resynchronization of guestproto.AgentSync, then SSH with banger-init's
// ping and poweroff requests and exec (run by /bin/sh on the host). It
// boots nothing: it is a double for the VMM, never a path a user takes.
//
// Exec runs on the host, as the test's user (root in CI): a test must not
// send its guests commands meant for a guest's filesystem, such as the
// key push of `ssh-key rotate` (it rewrites /root/.ssh/authorized_keys).
package vmmtest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"banger/internal/guestproto"
	"banger/internal/vmm"
)

// Name is the driver's name.
const Name = "test"

// guestArg marks the re-executed test binary as a guest (Main).
const guestArg = "vmmtest-guest"

// Driver is the test hypervisor. Caps is what it reports; the zero Driver
// from New boots both kernel formats, has no guest network and serial agent.
type Driver struct {
	Caps vmm.Capabilities

	mu      sync.Mutex
	started []int // pids, for tests that look for leftovers
}

var _ vmm.Driver = (*Driver)(nil)

// New returns a driver with default capabilities.
func New() *Driver {
	return &Driver{Caps: vmm.Capabilities{
		KernelFormats: []string{vmm.KernelBzImage, vmm.KernelVmlinux},
		MaxVCPU:       4, MinMemoryMiB: vmm.MinMemoryMiB, MaxMemoryMiB: 4096,
		Agent: vmm.AgentSerial, Network: vmm.NetworkNone, Verified: true,
		Snapshots: true,
	}}
}

func (d *Driver) Name() string                   { return Name }
func (d *Driver) Capabilities() vmm.Capabilities { return d.Caps }
func (d *Driver) Probe() vmm.ProbeResult {
	return vmm.ProbeResult{Usable: true, Accel: "test", Reason: "test double"}
}

// Started lists the pids of every VMM this driver started.
func (d *Driver) Started() []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]int(nil), d.started...)
}

func agentSocket(s vmm.Spec) string { return filepath.Join(s.RuntimeDir, "agent.sock") }

// Start spawns the guest process. The command line mentions the agent
// socket, which is what Attach checks after a daemon restart.
func (d *Driver) Start(ctx context.Context, s vmm.Spec) (vmm.Handle, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	sock := agentSocket(s)
	// The host key lives in the VM's directory, as banger-init's lives on
	// the VM's system.cow: a VM keeps its identity across boots (the
	// daemon's known_hosts pins it).
	hostKey := filepath.Join(s.Dir, "vmmtest_host_key")
	if s.Incoming != nil {
		// A restored guest is the saved one: same host key (the state is
		// the key, see SaveState), until the daemon gives it a new one.
		b, err := io.ReadAll(s.Incoming)
		if err != nil || !strings.HasPrefix(string(b), stateMagic) {
			return nil, fmt.Errorf("vmmtest: not a saved state (%v)", err)
		}
		if err := os.WriteFile(hostKey, b[len(stateMagic):], 0o600); err != nil {
			return nil, err
		}
	}
	p, err := vmm.Spawn(vmm.SpawnConfig{Path: exe, Args: []string{"-test.run=^$", guestArg, sock, s.Console(), hostKey},
		Stdout: filepath.Join(s.Dir, "vmm.log")})
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.started = append(d.started, p.PID())
	d.mu.Unlock()
	st := vmm.StateInfo{Driver: Name, PID: p.PID(), StartTime: p.StartTime(), ControlSocket: sock,
		AgentSocket: sock, AgentMode: vmm.AgentSerial, Dir: s.Dir, RuntimeDir: s.RuntimeDir}
	return &handle{Base: vmm.Base{Proc: p, St: st}}, nil
}

// Adopt re-attaches to a guest process a previous daemon started.
func (d *Driver) Adopt(st vmm.StateInfo) (vmm.Handle, error) {
	p, err := vmm.AttachState(Name, st)
	if err != nil {
		return nil, err
	}
	return &handle{Base: vmm.Base{Proc: p, St: st}}, nil
}

type handle struct{ vmm.Base }

var _ vmm.Snapshotter = (*handle)(nil)

// stateMagic starts a vmmtest saved state; the host key follows.
const stateMagic = "vmmtest-state\n"

// Pause stops the guest process (SIGSTOP): its agent stalls, as a paused
// VM's does.
func (h *handle) Pause(ctx context.Context) error { return h.Proc.Signal(syscall.SIGSTOP) }

// Resume continues it (SIGCONT).
func (h *handle) Resume(ctx context.Context) error { return h.Proc.Signal(syscall.SIGCONT) }

// Paused reads the process state from /proc: 'T' is stopped.
func (h *handle) Paused(ctx context.Context) (bool, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", h.PID()))
	if err != nil {
		return false, err
	}
	i := strings.LastIndexByte(string(b), ')')
	return i >= 0 && len(b) > i+2 && b[i+2] == 'T', nil
}

// SaveState writes the guest's identity (its host key): what a restore
// needs to come back as the same guest.
func (h *handle) SaveState(ctx context.Context, f *os.File) error {
	key, err := os.ReadFile(filepath.Join(h.St.Dir, "vmmtest_host_key"))
	if err != nil {
		return err
	}
	_, err = f.Write(append([]byte(stateMagic), key...))
	return err
}

func (h *handle) AgentConn(ctx context.Context) (net.Conn, error) {
	var dl net.Dialer
	return dl.DialContext(ctx, "unix", h.St.AgentSocket)
}

// Stop sends SIGTERM (the guest's "power button") and kills after 5 s.
func (h *handle) Stop(ctx context.Context) error {
	h.Proc.Signal(syscall.SIGTERM)
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if h.Proc.Wait(wctx) != nil && !h.Proc.Exited() {
		return h.Proc.Kill()
	}
	return nil
}

// Main runs the guest when the test binary was re-executed by Start; call
// it first in TestMain. It returns when this is not a guest process.
func Main() {
	if len(os.Args) < 5 || os.Args[len(os.Args)-4] != guestArg {
		return
	}
	a := os.Args[len(os.Args)-3:]
	if err := runGuest(a[0], a[1], a[2]); err != nil {
		fmt.Fprintln(os.Stderr, "vmmtest guest:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func runGuest(sock, console, keyPath string) error {
	os.WriteFile(console, []byte("vmmtest guest booted\n"), 0o640)
	hostKey, err := loadHostKey(keyPath)
	if err != nil {
		return err
	}
	g := &guest{keyPath: keyPath, key: hostKey}
	os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	go func() {
		sig := make(chan os.Signal, 1)
		signalNotify(sig)
		<-sig
		os.Exit(0)
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go g.serve(c)
	}
}

// guest is the double's guest state: its host key, which an identity
// request replaces.
type guest struct {
	keyPath string
	mu      sync.Mutex
	key     ssh.Signer
}

func (g *guest) config() *ssh.ServerConfig {
	g.mu.Lock()
	defer g.mu.Unlock()
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error) { return nil, nil }}
	cfg.AddHostKey(g.key)
	return cfg
}

// identity answers guestproto.IdentityRequest: a new host key, nothing
// else (the double has no network, hostname or clock of its own).
func (g *guest) identity(payload []byte) ([]byte, error) {
	if _, err := guestproto.DecodeIdentity(payload); err != nil {
		return nil, err
	}
	os.Remove(g.keyPath)
	k, err := loadHostKey(g.keyPath)
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	g.key = k
	g.mu.Unlock()
	return guestproto.EncodeIdentityReply(guestproto.IdentityReply{HostKey: string(ssh.MarshalAuthorizedKey(k.PublicKey()))})
}

// loadHostKey reads the guest's host key, creating it at first boot.
func loadHostKey(path string) (ssh.Signer, error) {
	if b, err := os.ReadFile(path); err == nil {
		return ssh.ParsePrivateKey(b)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, "vmmtest")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, err
	}
	return ssh.NewSignerFromKey(priv)
}

// serve is the guest side of one agent connection.
func (g *guest) serve(c net.Conn) {
	defer c.Close()
	if err := guestSync(c); err != nil {
		return
	}
	_, chans, reqs, err := ssh.NewServerConn(c, g.config())
	if err != nil {
		return
	}
	go func() {
		for r := range reqs {
			switch r.Type {
			case guestproto.PingRequest:
				r.Reply(true, nil)
			case guestproto.PoweroffRequest:
				r.Reply(true, nil)
				go func() { time.Sleep(50 * time.Millisecond); os.Exit(0) }()
			case guestproto.SetupRequest:
				r.Reply(true, []byte(`{"init":"banger"}`))
			case guestproto.SetTimeRequest:
				r.Reply(true, guestproto.EncodeTime(time.Now()))
			case guestproto.IdentityRequest:
				reply, err := g.identity(r.Payload)
				r.Reply(err == nil, reply)
			default:
				r.Reply(false, nil)
			}
		}
	}()
	for nc := range chans {
		if nc.ChannelType() != "session" {
			nc.Reject(ssh.UnknownChannelType, "vmmtest: only sessions")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			continue
		}
		go session(ch, creqs)
	}
}

func session(ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	for r := range reqs {
		if r.Type != "exec" || len(r.Payload) < 4 {
			r.Reply(r.Type == "env", nil)
			continue
		}
		n := binary.BigEndian.Uint32(r.Payload)
		if int(n) > len(r.Payload)-4 {
			r.Reply(false, nil)
			continue
		}
		r.Reply(true, nil)
		cmd := exec.Command("/bin/sh", "-c", string(r.Payload[4:4+n]))
		cmd.Stdin, cmd.Stdout, cmd.Stderr = ch, ch, ch.Stderr()
		code := 0
		if err := cmd.Run(); err != nil {
			code = 255
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
		}
		ch.SendRequest("exit-status", false, binary.BigEndian.AppendUint32(nil, uint32(code)))
		return
	}
}

// guestSync answers the host's resynchronization (guestproto.AgentSync).
func guestSync(rw io.ReadWriter) error {
	var line []byte
	nonce := ""
	b := make([]byte, 1)
	for {
		if _, err := rw.Read(b); err != nil {
			return err
		}
		if b[0] != '\n' {
			if len(line) < 256 {
				line = append(line, b[0])
			}
			continue
		}
		s := string(line)
		line = line[:0]
		switch {
		case strings.HasPrefix(s, guestproto.AgentSync):
			if n := strings.TrimPrefix(s, guestproto.AgentSync); n != "" && n != nonce {
				nonce = n
				if _, err := rw.Write([]byte(guestproto.AgentSyncOK + nonce + "\n")); err != nil {
					return err
				}
			}
		case nonce != "" && s == guestproto.AgentGo+nonce:
			return nil
		}
	}
}
