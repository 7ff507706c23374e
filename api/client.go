package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"time"
)

// DefaultSocket is where the daemon listens unless told otherwise.
const DefaultSocket = "/run/banger/banger.sock"

// SocketFromEnv returns $BANGER_SOCKET or the default.
func SocketFromEnv() string {
	if s := os.Getenv("BANGER_SOCKET"); s != "" {
		return s
	}
	return DefaultSocket
}

// Client calls the daemon. Each Call uses its own connection, so one Client
// is safe for concurrent use and a slow call never blocks another.
type Client struct {
	Socket string
	// OnProgress, when set, receives progress notifications of every call.
	OnProgress func(Progress)
	seq        atomic.Int64
}

// NewClient returns a client for the socket path.
func NewClient(socket string) *Client { return &Client{Socket: socket} }

// UnreachableError says the daemon is not listening.
type UnreachableError struct {
	Socket string
	Err    error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cannot reach banger daemon at %s: is `banger daemon` running? (%v)", e.Socket, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// Call invokes method with params and decodes the result into out (may be
// nil). Progress notifications go to c.OnProgress. Errors from the daemon
// come back as *Error with their kind.
func (c *Client) Call(ctx context.Context, method string, params, out any) error {
	return c.CallWithProgress(ctx, method, params, out, c.OnProgress)
}

// CallWithProgress is Call with this call's progress notifications going
// to progress (may be nil) instead of c.OnProgress.
func (c *Client) CallWithProgress(ctx context.Context, method string, params, out any, progress func(Progress)) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.Socket)
	if err != nil {
		if ctx.Err() != nil {
			return ctxError(ctx, method)
		}
		return &UnreachableError{Socket: c.Socket, Err: err}
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	id := strconv.FormatInt(c.seq.Add(1), 10)
	req := Request{JSONRPC: "2.0", ID: json.RawMessage(id), Method: method}
	if params != nil {
		b, err := json.Marshal(params)
		if err != nil {
			return fmt.Errorf("encode %s params: %w", method, err)
		}
		req.Params = b
	}
	b, _ := json.Marshal(req)
	if _, err := conn.Write(append(b, '\n')); err != nil {
		if ctx.Err() != nil {
			return ctxError(ctx, method)
		}
		return &UnreachableError{Socket: c.Socket, Err: err}
	}
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		var msg struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
			Params json.RawMessage `json:"params"`
			Result json.RawMessage `json:"result"`
			Error  *WireError      `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &msg); err != nil {
			return fmt.Errorf("bad message from daemon: %w", err)
		}
		if msg.Method == ProgressMethod && len(msg.ID) == 0 {
			if progress != nil {
				var p Progress
				if json.Unmarshal(msg.Params, &p) == nil {
					progress(p)
				}
			}
			continue
		}
		if msg.Error != nil {
			return wireError(msg.Error)
		}
		if out != nil && len(msg.Result) > 0 {
			if err := json.Unmarshal(msg.Result, out); err != nil {
				return fmt.Errorf("decode %s result: %w", method, err)
			}
		}
		return nil
	}
	if ctx.Err() != nil {
		return ctxError(ctx, method)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: connection to daemon failed: %w", method, err)
	}
	return errors.New(method + ": daemon closed the connection without answering (did it exit? see its log)")
}

// Stream makes a call that turns the connection into a raw byte stream
// (vm.proxy): on success the returned conn carries the stream.
func (c *Client) Stream(ctx context.Context, method string, params any) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.Socket)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctxError(ctx, method)
		}
		return nil, &UnreachableError{Socket: c.Socket, Err: err}
	}
	b, err := json.Marshal(params)
	if err != nil {
		conn.Close()
		return nil, err
	}
	req, _ := json.Marshal(Request{JSONRPC: "2.0", ID: json.RawMessage(`1`), Method: method, Params: b})
	if _, err := conn.Write(append(req, '\n')); err != nil {
		conn.Close()
		return nil, &UnreachableError{Socket: c.Socket, Err: err}
	}
	r := bufio.NewReader(conn)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			conn.Close()
			if ctx.Err() != nil {
				return nil, ctxError(ctx, method)
			}
			return nil, fmt.Errorf("%s: daemon closed the connection: %w", method, err)
		}
		var msg struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
			Error  *WireError      `json:"error"`
		}
		if err := json.Unmarshal(line, &msg); err != nil {
			conn.Close()
			return nil, fmt.Errorf("bad message from daemon: %w", err)
		}
		if msg.Method == ProgressMethod {
			continue
		}
		if msg.Error != nil {
			conn.Close()
			return nil, wireError(msg.Error)
		}
		return &streamConn{Conn: conn, r: r}, nil
	}
}

// wireError rebuilds the daemon's error: its kind (internal when the answer
// names none) and message; the cause chain stays in the daemon's log.
func wireError(we *WireError) error {
	kind := KindInternal
	if we.Data != nil && we.Data.Kind != "" {
		kind = we.Data.Kind
	}
	return &Error{Kind: kind, Message: we.Message}
}

// ctxError is the error of a call whose ctx ended: kind canceled or
// deadline_exceeded, wrapping ctx.Err() (and the cancel cause, if one was
// given) so errors.Is(err, context.Canceled) still holds.
func ctxError(ctx context.Context, method string) error {
	kind := KindCanceled
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		kind = KindDeadlineExceeded
	}
	if cause := context.Cause(ctx); cause != nil && cause != ctx.Err() {
		return Errorf(kind, "%s: %w (%w)", method, ctx.Err(), cause)
	}
	return Errorf(kind, "%s: %w", method, ctx.Err())
}

// streamConn reads through the buffer that may already hold stream bytes.
type streamConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *streamConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// CloseWrite half-closes the underlying unix socket.
func (c *streamConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
