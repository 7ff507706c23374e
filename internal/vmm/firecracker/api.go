package firecracker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Request bodies, field for field from Firecracker's swagger
// (src/firecracker/swagger/firecracker.yaml). Optional fields we never set
// are left out rather than sent empty.

// Logger is PUT /logger.
type Logger struct {
	LogPath       string `json:"log_path"`
	Level         string `json:"level,omitempty"` // Error, Warning, Info, Debug, Trace, Off
	ShowLevel     bool   `json:"show_level"`
	ShowLogOrigin bool   `json:"show_log_origin"`
}

// Metrics is PUT /metrics.
type Metrics struct {
	MetricsPath string `json:"metrics_path"`
}

// MachineConfig is PUT /machine-config.
type MachineConfig struct {
	VCPUCount  int  `json:"vcpu_count"`
	MemSizeMiB int  `json:"mem_size_mib"`
	SMT        bool `json:"smt"`
}

// BootSource is PUT /boot-source.
type BootSource struct {
	KernelImagePath string `json:"kernel_image_path"`
	InitrdPath      string `json:"initrd_path,omitempty"`
	BootArgs        string `json:"boot_args,omitempty"`
}

// Drive is PUT /drives/{drive_id}.
type Drive struct {
	DriveID      string `json:"drive_id"`
	PathOnHost   string `json:"path_on_host"`
	IsRootDevice bool   `json:"is_root_device"`
	IsReadOnly   bool   `json:"is_read_only"`
}

// NetworkInterface is PUT /network-interfaces/{iface_id}.
type NetworkInterface struct {
	IfaceID     string `json:"iface_id"`
	GuestMAC    string `json:"guest_mac,omitempty"`
	HostDevName string `json:"host_dev_name"`
}

// Vsock is PUT /vsock (vsock_id is deprecated and not sent).
type Vsock struct {
	GuestCID uint32 `json:"guest_cid"`
	UDSPath  string `json:"uds_path"`
}

// InstanceAction is PUT /actions.
type InstanceAction struct {
	ActionType string `json:"action_type"` // InstanceStart, SendCtrlAltDel, FlushMetrics
}

// Vm is PATCH /vm: pause or resume the vCPUs.
type Vm struct {
	State string `json:"state"` // Paused, Resumed
}

// InstanceInfo is GET /'s answer (the fields banger reads).
type InstanceInfo struct {
	ID    string `json:"id"`
	State string `json:"state"` // Not started, Running, Paused
}

// SnapshotCreateParams is PUT /snapshot/create (the VM must be paused).
type SnapshotCreateParams struct {
	SnapshotType string `json:"snapshot_type,omitempty"` // Full, Diff
	SnapshotPath string `json:"snapshot_path"`
	MemFilePath  string `json:"mem_file_path"`
}

// MemoryBackend is SnapshotLoadParams.mem_backend.
type MemoryBackend struct {
	BackendType string `json:"backend_type"` // File, Uffd
	BackendPath string `json:"backend_path"`
}

// NetworkOverride points a restored interface at another tap.
type NetworkOverride struct {
	IfaceID     string `json:"iface_id"`
	HostDevName string `json:"host_dev_name"`
}

// VsockOverride gives a restored vsock device another unix socket.
type VsockOverride struct {
	UDSPath string `json:"uds_path"`
}

// SnapshotLoadParams is PUT /snapshot/load, on a Firecracker that was
// given nothing but its logger and metrics.
type SnapshotLoadParams struct {
	SnapshotPath     string            `json:"snapshot_path"`
	MemBackend       *MemoryBackend    `json:"mem_backend,omitempty"`
	ResumeVM         bool              `json:"resume_vm"`
	NetworkOverrides []NetworkOverride `json:"network_overrides,omitempty"`
	VsockOverride    *VsockOverride    `json:"vsock_override,omitempty"`
}

// Client talks to one Firecracker API socket.
type Client struct {
	sock string
	http *http.Client
}

// NewClient returns a client for the API socket at sock.
func NewClient(sock string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		DisableKeepAlives: true,
	}
	return &Client{sock: sock, http: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

// APIError is a non-204 answer; Fault is Firecracker's fault_message.
type APIError struct {
	Method, Path string
	Status       int
	Fault        string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("firecracker %s %s: HTTP %d: %s", e.Method, e.Path, e.Status, e.Fault)
}

// Put sends body as JSON to path and wants 204 No Content.
func (c *Client) Put(ctx context.Context, path string, body any) error {
	return c.do(ctx, http.MethodPut, path, body, nil)
}

// Patch is Put with PATCH (PATCH /vm).
func (c *Client) Patch(ctx context.Context, path string, body any) error {
	return c.do(ctx, http.MethodPatch, path, body, nil)
}

// Get reads path's JSON answer (200) into out.
func (c *Client) Get(ctx context.Context, path string, out any) error {
	return c.do(ctx, http.MethodGet, path, nil, out)
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://localhost"+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("firecracker %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if out == nil && resp.StatusCode == http.StatusNoContent {
		return nil
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(msg, out); err != nil {
			return fmt.Errorf("firecracker %s %s: %w", method, path, err)
		}
		return nil
	}
	var fe struct {
		FaultMessage string `json:"fault_message"`
	}
	if json.Unmarshal(msg, &fe) == nil && fe.FaultMessage != "" {
		msg = []byte(fe.FaultMessage)
	}
	return &APIError{Method: method, Path: path, Status: resp.StatusCode, Fault: strings.TrimSpace(string(msg))}
}

// DialHybridVsock connects to port in the guest through Firecracker's
// hybrid vsock: connect to the device's unix socket, send "CONNECT <port>\n",
// and expect "OK <host port>\n"; the connection then carries the stream.
func DialHybridVsock(ctx context.Context, udsPath string, port uint32) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", udsPath)
	if err != nil {
		return nil, fmt.Errorf("vsock %s: %w", udsPath, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	} else {
		c.SetDeadline(time.Now().Add(10 * time.Second))
	}
	if _, err := fmt.Fprintf(c, "CONNECT %d\n", port); err != nil {
		c.Close()
		return nil, fmt.Errorf("vsock CONNECT %d: %w", port, err)
	}
	// Read byte by byte: anything after the newline is the guest's data.
	line, err := readLine(c, 64)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("vsock CONNECT %d: no answer (is the guest agent listening?): %w", port, err)
	}
	f := strings.Fields(line)
	if len(f) != 2 || f[0] != "OK" {
		c.Close()
		return nil, fmt.Errorf("vsock CONNECT %d: unexpected answer %q", port, line)
	}
	if _, err := strconv.ParseUint(f[1], 10, 32); err != nil {
		c.Close()
		return nil, fmt.Errorf("vsock CONNECT %d: unexpected answer %q", port, line)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

func readLine(r io.Reader, max int) (string, error) {
	var b []byte
	one := make([]byte, 1)
	for len(b) < max {
		if _, err := io.ReadFull(r, one); err != nil {
			return string(b), err
		}
		if one[0] == '\n' {
			return string(b), nil
		}
		b = append(b, one[0])
	}
	return string(b), fmt.Errorf("line longer than %d bytes", max)
}
