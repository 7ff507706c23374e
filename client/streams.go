package client

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"time"

	"banger/api"
)

// Proxy (vm.proxy) returns a connection to the VM's SSH server (port 22)
// through the daemon: what `ssh -o ProxyCommand` and Guest use. The
// connection supports CloseWrite.
func (c *Client) Proxy(ctx context.Context, name string) (net.Conn, error) {
	return c.rpc.Stream(ctx, api.MethodVMProxy, api.NameParams{Name: name})
}

// Events (daemon.events) calls fn with each event matching p.Filters as it
// happens, until ctx ends (then it returns nil), fn returns an error (it
// returns that), or the daemon goes away.
func (c *Client) Events(ctx context.Context, p api.EventsParams, fn func(api.Event) error) error {
	es, err := c.WatchEvents(ctx, p)
	if err != nil {
		return err
	}
	defer es.Close()
	for {
		e, err := es.Next()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if err := fn(e); err != nil {
			return err
		}
	}
}

// EventStream is a daemon.events subscription (WatchEvents).
type EventStream struct {
	conn net.Conn
	sc   *bufio.Scanner
	stop func() bool
}

// WatchEvents subscribes to the events matching p.Filters and returns once
// the daemon has registered the subscription: everything that happens
// after it returns is in the stream. Read with Next; Close (or ctx ending)
// ends it.
func (c *Client) WatchEvents(ctx context.Context, p api.EventsParams) (*EventStream, error) {
	conn, err := c.rpc.Stream(ctx, api.MethodEvents, p)
	if err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	return &EventStream{conn: conn, sc: sc, stop: context.AfterFunc(ctx, func() { conn.Close() })}, nil
}

// Next blocks for the next event. It fails once the stream is closed, ctx
// ended, or the daemon went away.
func (s *EventStream) Next() (api.Event, error) {
	var e api.Event
	if !s.sc.Scan() {
		if err := s.sc.Err(); err != nil {
			return e, fmt.Errorf("daemon.events: %w", err)
		}
		return e, fmt.Errorf("daemon.events: the stream ended (closed, or the daemon exited: see its log)")
	}
	if err := json.Unmarshal(s.sc.Bytes(), &e); err != nil {
		return e, fmt.Errorf("daemon.events: bad event line: %w", err)
	}
	return e, nil
}

// Close ends the subscription.
func (s *EventStream) Close() error {
	s.stop()
	return s.conn.Close()
}

// FollowLogs writes the VM's console log to w. With follow it keeps
// polling (every interval, 500ms when 0) while the VM runs, and returns
// once the VM has stopped and the log is drained, or nil when ctx ends.
func (c *Client) FollowLogs(ctx context.Context, name string, w io.Writer, follow bool, interval time.Duration) error {
	return c.FollowLogsFrom(ctx, name, w, 0, follow, interval)
}

// FollowLogsFrom is FollowLogs from byte offset off of the log (the Offset
// of an earlier Logs call), for a caller that printed the start itself.
func (c *Client) FollowLogsFrom(ctx context.Context, name string, w io.Writer, off int64, follow bool, interval time.Duration) error {
	if interval <= 0 {
		interval = 500 * time.Millisecond
	}
	for {
		res, err := c.Logs(ctx, name, off)
		if err != nil {
			if follow && ctx.Err() != nil {
				return nil
			}
			return err
		}
		if _, err := io.WriteString(w, res.Data); err != nil {
			return err
		}
		off = res.Offset
		if !follow {
			return nil
		}
		if res.Data == "" && res.State != "running" && res.State != "starting" && res.State != "stopping" {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
}
