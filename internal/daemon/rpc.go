package daemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"sort"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"banger/api"
)

// handlerFunc serves one method from its raw params (may be empty);
// progress notifications go through report(ctx, …). Only method makes
// them.
type handlerFunc func(ctx context.Context, params json.RawMessage) (any, error)

// method registers fn as the handler of name. Params are decoded strictly
// into P: absent or null params leave P zero, and a method without params
// takes struct{}, which still refuses any field (a caller's typo is an
// error, not silently ignored). fn's R is the call's result, so every
// method's wire shape is a type in package api. Called only during setup,
// before serving.
func method[P, R any](d *Daemon, name string, fn func(ctx context.Context, p P) (R, error)) {
	if d.handlers == nil {
		d.handlers = map[string]handlerFunc{}
	}
	if _, dup := d.handlers[name]; dup {
		panic("daemon: method registered twice: " + name)
	}
	d.record(MethodSig{Name: name, Params: reflect.TypeFor[P](), Result: reflect.TypeFor[R]()})
	d.handlers[name] = func(ctx context.Context, raw json.RawMessage) (any, error) {
		var p P
		if err := decode(raw, &p); err != nil {
			return nil, err
		}
		return fn(ctx, p)
	}
}

// stream registers up as the upgrader of name, a call that answers once
// and then turns the connection into a stream (vm.proxy, daemon.events);
// P is its params type, for the method table.
func stream[P any](d *Daemon, name string, up upgradeFunc) {
	d.record(MethodSig{Name: name, Params: reflect.TypeFor[P](), Stream: true})
	d.upgraders[name] = up
}

// MethodSig is one method of the daemon's RPC surface as its table
// declares it: what the docs, the JSON schema and the SDK's coverage test
// are checked against.
type MethodSig struct {
	Name   string
	Params reflect.Type
	// Result is nil for a stream (Stream true): after a successful answer
	// the connection carries raw bytes (vm.proxy) or Event lines
	// (daemon.events).
	Result reflect.Type
	Stream bool
}

func (d *Daemon) record(s MethodSig) {
	if d.sigs == nil {
		d.sigs = map[string]MethodSig{}
	}
	d.sigs[s.Name] = s
}

// Methods is the daemon's method table, sorted by name. It registers the
// methods on a daemon that serves nothing; no handler runs.
func Methods() []MethodSig {
	d := &Daemon{upgraders: map[string]upgradeFunc{}}
	d.registerMethods()
	out := make([]MethodSig, 0, len(d.sigs))
	for _, s := range d.sigs {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// decode strictly unmarshals params into v: unknown fields are an error,
// since an SDK caller's typo should not silently do something else, and so
// is anything after the one JSON value (dispatch hands over one value, but
// decode does not rely on its caller for that).
func decode(params json.RawMessage, v any) error {
	trimmed := bytes.Trim(params, jsonSpace)
	if len(trimmed) == 0 || string(trimmed) == "null" {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(params))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return api.Errorf(api.KindInvalidArgument, "invalid params: %v", err)
	}
	if rest := bytes.Trim(params[dec.InputOffset():], jsonSpace); len(rest) > 0 {
		return api.Errorf(api.KindInvalidArgument, "invalid params: data after the JSON value")
	}
	return nil
}

// jsonSpace is JSON's whitespace (bytes.TrimSpace also trims \v, \f and
// Unicode spaces, which JSON does not allow).
const jsonSpace = " \t\r\n"

// serveConn reads newline-delimited requests and answers each. Requests on
// one connection run concurrently; writes are serialized.
//
// A request's context ends when its caller hangs up (Ctrl-C on a pull
// cancels the pull): a read error other than EOF, or EOF followed by a
// full hang-up. EOF alone may be a half-close (socat, `nc -N`) whose
// sender still waits for the answer, so then the connection is watched
// for POLLHUP while requests are in flight.
func (d *Daemon) serveConn(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	// Who called is the kernel's word (SO_PEERCRED), for the connection's
	// whole life; a connection whose peer cannot be told is refused.
	who, err := peerCred(conn)
	if err != nil {
		d.log.Warn("refusing a connection whose peer is unknown", "err", err)
		return
	}
	ctx = withCaller(ctx, who)
	ctx, hangUp := context.WithCancelCause(ctx)
	defer hangUp(nil)
	var wmu sync.Mutex
	write := func(v any) {
		b, err := json.Marshal(v)
		if err != nil {
			return
		}
		wmu.Lock()
		defer wmu.Unlock()
		conn.Write(append(b, '\n'))
	}
	var inflight sync.WaitGroup
	defer inflight.Wait()
	r := bufio.NewReaderSize(conn, 64<<10)
	for {
		// readLine skips the rest of an oversized line, bounded in time,
		// so the client reads the error instead of a reset; then carry on.
		line, err := readLine(r, api.MaxRequestBytes, func() {
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		})
		if errors.Is(err, errTooLong) {
			write(errorResponse(nil, api.CodeInvalidRequest, api.KindInvalidArgument,
				fmt.Sprintf("request larger than %d bytes refused", api.MaxRequestBytes)))
			if err != errTooLong {
				return // the line never ended: EOF, the deadline, a broken connection
			}
			conn.SetReadDeadline(time.Time{})
			continue
		}
		if len(bytes.TrimSpace(line)) > 0 {
			if up, req := d.upgrader(line); up != nil {
				inflight.Wait()
				if d.upgrade(ctx, conn, r, req, up, write) {
					return
				}
				continue
			}
			d.dispatch(ctx, line, write, &inflight)
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				hangUp(errCallerGone)
				return
			}
			done := make(chan struct{})
			go watchHangUp(conn, done, hangUp)
			inflight.Wait()
			close(done)
			return
		}
	}
}

// errCallerGone is the cause of a request context whose caller hung up.
var errCallerGone = errors.New("the caller hung up")

// watchHangUp cancels via hangUp once the peer has closed both directions
// of conn, until done is closed.
func watchHangUp(conn net.Conn, done <-chan struct{}, hangUp context.CancelCauseFunc) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	// The first look is at once: a caller that closed its socket (Ctrl-C)
	// is cancelled without waiting for a tick.
	for {
		if peerGone(rc) {
			hangUp(errCallerGone)
			return
		}
		select {
		case <-done:
			return
		case <-t.C:
		}
	}
}

// peerGone says whether the peer of the socket has closed both directions.
func peerGone(rc syscall.RawConn) bool {
	gone := false
	rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLRDHUP}}
		if n, err := unix.Poll(fds, 0); err == nil && n > 0 && fds[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0 {
			gone = true
		}
	})
	return gone
}

var errTooLong = errors.New("line too long")

// readLine returns one line without its newline (and trailing "\r"s). A
// line of more than max bytes before its newline is refused without
// buffering it whole: tooLong is called (serveConn bounds the time the rest
// may take), the rest of the line up to its newline is read and dropped,
// and the error is errTooLong, so the next call reads the next line; it is
// errTooLong joined with the read error when the line never ended.
//
// The newline alone decides where a line ends: a last line without one
// (EOF) is held to the same max.
func readLine(r *bufio.Reader, max int, tooLong func()) ([]byte, error) {
	var buf []byte
	for {
		chunk, err := r.ReadSlice('\n')
		n := len(chunk)
		if err == nil {
			n-- // the newline is not part of the line
		}
		if len(buf)+n > max {
			if tooLong != nil {
				tooLong()
			}
			for err == bufio.ErrBufferFull {
				_, err = r.ReadSlice('\n')
			}
			if err != nil {
				return nil, fmt.Errorf("%w: %w", errTooLong, err)
			}
			return nil, errTooLong
		}
		buf = append(buf, chunk...)
		if err == bufio.ErrBufferFull {
			continue
		}
		return bytes.TrimRight(buf, "\r\n"), err
	}
}

func (d *Daemon) dispatch(ctx context.Context, line []byte, write func(any), inflight *sync.WaitGroup) {
	var req api.Request
	if err := json.Unmarshal(line, &req); err != nil {
		write(errorResponse(nil, api.CodeParseError, api.KindInvalidArgument, "malformed JSON: "+err.Error()))
		return
	}
	if req.JSONRPC != "2.0" || req.Method == "" {
		write(errorResponse(req.ID, api.CodeInvalidRequest, api.KindInvalidArgument, `invalid request: want {"jsonrpc":"2.0","id":…,"method":…}`))
		return
	}
	h, ok := d.handlers[req.Method]
	if !ok {
		write(errorResponse(req.ID, api.CodeMethodNotFound, api.KindNotFound, fmt.Sprintf("unknown method %q", req.Method)))
		return
	}
	inflight.Add(1)
	d.inflight.Add(1)
	go func() {
		defer inflight.Done()
		defer d.inflight.Done()
		isCall := len(req.ID) > 0
		cctx := withProgress(ctx, func(p api.Progress) {
			if isCall {
				write(api.Notification{JSONRPC: "2.0", Method: api.ProgressMethod, Params: p})
			}
		})
		res, err := d.call(cctx, h, req.Params)
		if !isCall {
			return // a notification gets no answer
		}
		if err != nil {
			kind := errKind(err)
			write(errorResponse(req.ID, api.CodeFor(kind), kind, err.Error()))
			return
		}
		b, err := json.Marshal(res)
		if err != nil {
			write(errorResponse(req.ID, api.CodeInternal, api.KindInternal, "encode result: "+err.Error()))
			return
		}
		write(api.Response{JSONRPC: "2.0", ID: req.ID, Result: b})
	}()
}

// call runs a handler, turning a panic into an internal error so one bad
// request cannot take the daemon down.
func (d *Daemon) call(ctx context.Context, h handlerFunc, params json.RawMessage) (res any, err error) {
	defer func() {
		if r := recover(); r != nil {
			d.log.Error("handler panic", "panic", r)
			err = api.Errorf(api.KindInternal, "internal error: %v", r)
		}
	}()
	return h(ctx, params)
}

func errorResponse(id json.RawMessage, code int, kind api.Kind, msg string) api.Response {
	if len(id) == 0 {
		id = json.RawMessage("null")
	}
	return api.Response{JSONRPC: "2.0", ID: id, Error: &api.WireError{Code: code, Message: msg, Data: &api.WireErrorData{Kind: kind}}}
}

// upgradeFunc prepares a call that turns the connection into a raw byte
// stream (vm.proxy): it returns the function that serves the stream.
type upgradeFunc func(ctx context.Context, params json.RawMessage) (func(io.ReadWriteCloser), error)

func (d *Daemon) upgrader(line []byte) (upgradeFunc, api.Request) {
	var req api.Request
	if json.Unmarshal(line, &req) != nil || len(req.ID) == 0 {
		return nil, req
	}
	return d.upgraders[req.Method], req
}

// upgrade answers the call; on success the connection belongs to the
// stream from then on (true). Such calls run inline: the reader must not
// consume the stream's bytes as requests.
func (d *Daemon) upgrade(ctx context.Context, conn net.Conn, r *bufio.Reader, req api.Request, up upgradeFunc, write func(any)) bool {
	d.inflight.Add(1)
	defer d.inflight.Done()
	serve, err := up(ctx, req.Params)
	if err != nil {
		kind := errKind(err)
		write(errorResponse(req.ID, api.CodeFor(kind), kind, err.Error()))
		return false
	}
	write(api.Response{JSONRPC: "2.0", ID: req.ID, Result: json.RawMessage(`{"stream":true}`)})
	serve(&bufferedConn{Conn: conn, r: r})
	return true
}

// bufferedConn reads through the bufio.Reader that may hold stream bytes.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
