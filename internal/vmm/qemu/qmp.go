package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// QMP is a minimal QEMU Machine Protocol client: one connection, one
// command at a time. QEMU serves one QMP client per socket at a time (a
// second one waits in the listen backlog), so callers dial, run what they
// need and Close; nothing holds the monitor open.
type QMP struct {
	conn net.Conn
	r    *bufio.Reader
}

type qmpMsg struct {
	QMP    json.RawMessage `json:"QMP"`
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	Event string `json:"event"`
}

// DialQMP connects to the QMP socket at path, reads the greeting and
// negotiates capabilities.
func DialQMP(ctx context.Context, path string) (*QMP, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	q := &QMP{conn: c, r: bufio.NewReader(c)}
	q.deadline(ctx)
	m, err := q.read()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("qmp greeting on %s: %w", path, err)
	}
	if m.QMP == nil {
		c.Close()
		return nil, fmt.Errorf("qmp greeting on %s: not a QMP server", path)
	}
	if _, err := q.Execute(ctx, "qmp_capabilities", nil); err != nil {
		c.Close()
		return nil, err
	}
	return q, nil
}

// Close closes the connection.
func (q *QMP) Close() error { return q.conn.Close() }

// deadline bounds every exchange by ctx, or 10 s when ctx has no deadline,
// so a wedged QEMU cannot hang the daemon.
func (q *QMP) deadline(ctx context.Context) {
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(10 * time.Second)
	}
	q.conn.SetDeadline(dl)
}

func (q *QMP) read() (qmpMsg, error) {
	line, err := q.r.ReadBytes('\n')
	if err != nil {
		return qmpMsg{}, err
	}
	var m qmpMsg
	if err := json.Unmarshal(line, &m); err != nil {
		return qmpMsg{}, fmt.Errorf("bad qmp message %q: %w", line, err)
	}
	return m, nil
}

// Execute runs cmd with args (nil for none) and returns its "return" value.
// Asynchronous events that arrive meanwhile are skipped.
func (q *QMP) Execute(ctx context.Context, cmd string, args any) (json.RawMessage, error) {
	q.deadline(ctx)
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	if _, err := q.conn.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("qmp %s: %w", cmd, err)
	}
	for {
		m, err := q.read()
		if err != nil {
			return nil, fmt.Errorf("qmp %s: %w", cmd, err)
		}
		if m.Event != "" {
			continue
		}
		if m.Error != nil {
			return nil, fmt.Errorf("qmp %s: %s: %s", cmd, m.Error.Class, m.Error.Desc)
		}
		return m.Return, nil
	}
}

// Status is query-status's answer.
type Status struct {
	Running bool   `json:"running"`
	Status  string `json:"status"` // "running", "paused", "shutdown", ...
}

// QueryStatus runs query-status.
func (q *QMP) QueryStatus(ctx context.Context) (Status, error) {
	raw, err := q.Execute(ctx, "query-status", nil)
	if err != nil {
		return Status{}, err
	}
	var s Status
	if err := json.Unmarshal(raw, &s); err != nil {
		return Status{}, fmt.Errorf("qmp query-status: %w", err)
	}
	return s, nil
}

// SystemPowerdown presses the ACPI power button (under microvm: an event
// on the generic event device, seen by the guest as KEY_POWER on its
// "Power Button" input device).
func (q *QMP) SystemPowerdown(ctx context.Context) error {
	_, err := q.Execute(ctx, "system_powerdown", nil)
	return err
}

// Quit makes QEMU exit at once. QEMU may close the connection before or
// after answering; both mean success.
func (q *QMP) Quit(ctx context.Context) error {
	_, err := q.Execute(ctx, "quit", nil)
	if err != nil && (errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed)) {
		return nil
	}
	return err
}
