package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
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
	return q.execute(ctx, cmd, args, nil)
}

// GetFD hands f to QEMU under name (QMP getfd, the fd passed with
// SCM_RIGHTS beside the command), for commands that take "fd:NAME": a
// sandboxed QEMU running as another user cannot open the daemon's paths.
func (q *QMP) GetFD(ctx context.Context, name string, f *os.File) error {
	_, err := q.execute(ctx, "getfd", map[string]any{"fdname": name}, f)
	return err
}

func (q *QMP) execute(ctx context.Context, cmd string, args any, fd *os.File) (json.RawMessage, error) {
	q.deadline(ctx)
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	b = append(b, '\n')
	if fd != nil {
		uc, ok := q.conn.(*net.UnixConn)
		if !ok {
			return nil, fmt.Errorf("qmp %s: passing a file needs a unix socket", cmd)
		}
		// QEMU takes the fd that arrives with the command's first bytes.
		if _, _, err := uc.WriteMsgUnix(b, syscall.UnixRights(int(fd.Fd())), nil); err != nil {
			return nil, fmt.Errorf("qmp %s: %w", cmd, err)
		}
	} else if _, err := q.conn.Write(b); err != nil {
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

// Stop pauses the vCPUs (QMP stop).
func (q *QMP) Stop(ctx context.Context) error {
	_, err := q.Execute(ctx, "stop", nil)
	return err
}

// Cont resumes the vCPUs (QMP cont); after a migration it also re-activates
// the block devices the migration handed over.
func (q *QMP) Cont(ctx context.Context) error {
	_, err := q.Execute(ctx, "cont", nil)
	return err
}

// MigrationStatus is query-migrate's answer (the fields banger reads).
type MigrationStatus struct {
	Status      string `json:"status"` // none, setup, active, completed, failed, cancelled …
	ErrorDesc   string `json:"error-desc"`
	TotalTimeMs int64  `json:"total-time"`
	RAM         *struct {
		Transferred int64 `json:"transferred"`
	} `json:"ram"`
}

// QueryMigrate runs query-migrate.
func (q *QMP) QueryMigrate(ctx context.Context) (MigrationStatus, error) {
	raw, err := q.Execute(ctx, "query-migrate", nil)
	if err != nil {
		return MigrationStatus{}, err
	}
	var m MigrationStatus
	if err := json.Unmarshal(raw, &m); err != nil {
		return MigrationStatus{}, fmt.Errorf("qmp query-migrate: %w", err)
	}
	return m, nil
}
