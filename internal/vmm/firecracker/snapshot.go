package firecracker

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"banger/internal/vmm"
)

// Snapshots, through Firecracker's API (docs/snapshotting): PATCH /vm
// pauses and resumes, PUT /snapshot/create writes a paused VM's device
// state and memory to two files, and PUT /snapshot/load restores them into
// a Firecracker given nothing but its logger and metrics. Built to the
// documented API and contract-tested against the schema-checking stand-in
// (fake_test.go); never run against a real Firecracker here (no KVM).
//
// vmm.Snapshotter hands SaveState one file, so the two are packed into it
// (stateMagic, a JSON header with their sizes, the state, the memory) and
// unpacked at restore: the state next to the VM (removed once loaded),
// the memory as MemoryFile in the VM's dir, which Firecracker maps
// privately for the restored VM's whole life. The state records the
// drives' paths, relative to the VM's runtime dir (driveLink), so a
// restore opens the new VM's disk copies; its tap and vsock socket are
// the new VM's through network_overrides and vsock_override.

// MemoryFile is a restored VM's guest memory file, in Spec.Dir.
const MemoryFile = "memory"

const stateMagic = "banger-firecracker-snapshot\n"

type stateHeader struct {
	Version    int   `json:"version"`
	StateBytes int64 `json:"state_bytes"`
	MemBytes   int64 `json:"mem_bytes"`
}

var _ vmm.Snapshotter = (*handle)(nil)

// slow is the API client for calls that take as long as the guest's
// memory does to write or map: bounded by ctx, not the client's timeout.
func slow(sock string) *Client {
	c := NewClient(sock)
	c.http.Timeout = 0
	return c
}

// Pause stops the vCPUs (PATCH /vm Paused).
func (h *handle) Pause(ctx context.Context) error {
	return NewClient(h.St.ControlSocket).Patch(ctx, "/vm", Vm{State: "Paused"})
}

// Resume runs them again (PATCH /vm Resumed).
func (h *handle) Resume(ctx context.Context) error {
	return NewClient(h.St.ControlSocket).Patch(ctx, "/vm", Vm{State: "Resumed"})
}

// Paused asks Firecracker (GET /).
func (h *handle) Paused(ctx context.Context) (bool, error) {
	var info InstanceInfo
	if err := NewClient(h.St.ControlSocket).Get(ctx, "/", &info); err != nil {
		return false, err
	}
	return info.State == "Paused", nil
}

// SaveState has Firecracker write a full snapshot of the paused VM next
// to it, then packs both files into f.
func (h *handle) SaveState(ctx context.Context, f *os.File) error {
	if h.St.Mention != "" {
		return errJailedSnapshot
	}
	st, mem := filepath.Join(h.St.Dir, "snapshot-state.tmp"), filepath.Join(h.St.Dir, "snapshot-mem.tmp")
	defer os.Remove(st)
	defer os.Remove(mem)
	os.Remove(st)
	os.Remove(mem)
	if err := slow(h.St.ControlSocket).Put(ctx, "/snapshot/create", SnapshotCreateParams{SnapshotType: "Full", SnapshotPath: st, MemFilePath: mem}); err != nil {
		return err
	}
	return pack(f, st, mem)
}

func pack(f *os.File, state, mem string) error {
	sf, err := os.Open(state)
	if err != nil {
		return err
	}
	defer sf.Close()
	mf, err := os.Open(mem)
	if err != nil {
		return err
	}
	defer mf.Close()
	ss, err := sf.Stat()
	if err != nil {
		return err
	}
	ms, err := mf.Stat()
	if err != nil {
		return err
	}
	hdr, _ := json.Marshal(stateHeader{Version: 1, StateBytes: ss.Size(), MemBytes: ms.Size()})
	w := bufio.NewWriterSize(f, 1<<20)
	w.WriteString(stateMagic)
	w.Write(append(hdr, '\n'))
	if _, err := io.Copy(w, sf); err != nil {
		return err
	}
	if _, err := io.Copy(w, mf); err != nil {
		return err
	}
	return w.Flush()
}

// unpack reads what pack wrote from r into state and mem.
func unpack(r io.Reader, state, mem string) error {
	br := bufio.NewReaderSize(r, 1<<20)
	magic := make([]byte, len(stateMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != stateMagic {
		return errors.New("not a banger firecracker snapshot (bad magic): was it taken with another hypervisor?")
	}
	line, err := br.ReadString('\n')
	if err != nil {
		return fmt.Errorf("snapshot header: %w", err)
	}
	var h stateHeader
	if err := json.Unmarshal([]byte(strings.TrimSpace(line)), &h); err != nil || h.Version != 1 || h.StateBytes <= 0 || h.MemBytes <= 0 {
		return fmt.Errorf("snapshot header %q: unsupported", strings.TrimSpace(line))
	}
	for _, part := range []struct {
		path string
		n    int64
	}{{state, h.StateBytes}, {mem, h.MemBytes}} {
		out, err := os.OpenFile(part.path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		n, err := io.Copy(out, io.LimitReader(br, part.n))
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err == nil && n != part.n {
			err = fmt.Errorf("%s: %d of %d bytes (truncated snapshot)", filepath.Base(part.path), n, part.n)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Restore configures a fresh Firecracker for s from s.Incoming: logger
// and metrics, the drive links, then PUT /snapshot/load, resumed, with
// s's tap and vsock socket.
func Restore(ctx context.Context, c *Client, s vmm.Spec) error {
	p := pathsFor(s)
	state, mem := filepath.Join(s.Dir, "restore-state.tmp"), filepath.Join(s.Dir, MemoryFile)
	defer os.Remove(state)
	if err := unpack(s.Incoming, state, mem); err != nil {
		return err
	}
	if err := c.Put(ctx, "/logger", Logger{LogPath: p.log, Level: "Info", ShowLevel: true}); err != nil {
		return err
	}
	if err := c.Put(ctx, "/metrics", Metrics{MetricsPath: p.metrics}); err != nil {
		return err
	}
	if err := linkDrives(s); err != nil {
		return err
	}
	load := SnapshotLoadParams{
		SnapshotPath: state, MemBackend: &MemoryBackend{BackendType: "File", BackendPath: mem},
		ResumeVM: true, VsockOverride: &VsockOverride{UDSPath: p.vsock},
	}
	if s.Net != nil && s.Net.Tap != "" {
		load.NetworkOverrides = []NetworkOverride{{IfaceID: "eth0", HostDevName: s.Net.Tap}}
	}
	return slow(c.sock).Put(ctx, "/snapshot/load", load)
}
