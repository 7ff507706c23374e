package daemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/api"
	"banger/internal/model"
)

// startTestDaemon runs a daemon on temp dirs whose default image "img"
// (kernel "testk") is already local, so creates need no pull.
func startTestDaemon(t *testing.T) (*Daemon, *api.Client) {
	t.Helper()
	return startDaemonWith(t, func(c *Config) { c.DefaultImage = "img" })
}

// seedLocal imports a tiny ELF "kernel" named testk and records an image
// "img" that uses it: enough for reservation-only creates.
func seedLocal(t *testing.T, d *Daemon) {
	t.Helper()
	k := filepath.Join(t.TempDir(), "vmlinux")
	body := append([]byte("\x7fELF\x02\x01\x01\x00"), make([]byte, 56)...)
	body = append(body, []byte("Linux version 6.1.0-test (test@banger) #1 SMP\x00")...)
	if err := os.WriteFile(k, body, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := d.kernels.Import(context.Background(), api.KernelImportParams{Name: "testk", Kernel: k}); err != nil {
		t.Fatal(err)
	}
	img := model.Image{ID: model.NewID(), Name: "img", Source: "test", Kernel: "testk", Dir: t.TempDir()}
	if err := d.store.UpsertImage(context.Background(), img); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentReserve(t *testing.T) {
	_, c := startTestDaemon(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, exists := 0, 0
	ips := map[string]string{}
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			var vm api.VM
			err := c.Call(context.Background(), api.MethodVMCreate, api.VMCreateParams{Name: fmt.Sprintf("vm-%d", i%50), NoStart: true, Image: "img"}, &vm)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
				if prev, dup := ips[vm.GuestIP]; dup {
					t.Errorf("IP %s given to %s and %s", vm.GuestIP, prev, vm.Name)
				}
				ips[vm.GuestIP] = vm.Name
			case api.IsKind(err, api.KindAlreadyExists):
				exists++
			default:
				t.Errorf("create %d: %v", i, err)
			}
		}(i)
	}
	wg.Wait()
	if ok != 50 || exists != 150 {
		t.Fatalf("ok=%d already_exists=%d, want 50/150", ok, exists)
	}
	prefix := netip.MustParsePrefix("10.200.0.1/24")
	for ip := range ips {
		a := netip.MustParseAddr(ip)
		if !prefix.Contains(a) || a == prefix.Addr() || a == prefix.Masked().Addr() {
			t.Errorf("bad guest IP %s", ip)
		}
	}
	var vms []api.VM
	if err := c.Call(context.Background(), api.MethodVMList, api.VMListParams{All: true}, &vms); err != nil || len(vms) != 50 {
		t.Fatalf("list: %d %v", len(vms), err)
	}
}

// rawCall sends one line and returns the decoded response line.
func rawCall(t *testing.T, sock string, line []byte) api.Response {
	t.Helper()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	go func() { conn.Write(append(line, '\n')) }()
	sc := bufio.NewScanner(conn)
	sc.Buffer(nil, 1<<20)
	if !sc.Scan() {
		t.Fatalf("no answer: %v", sc.Err())
	}
	var r api.Response
	if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestBadRequests(t *testing.T) {
	d, c := startTestDaemon(t)
	sock := d.cfg.Socket
	cases := []struct {
		name string
		line []byte
		code int
		want string
	}{
		{"malformed", []byte(`{"jsonrpc":"2.0","id":1,"method":`), api.CodeParseError, "malformed JSON"},
		{"unknown method", []byte(`{"jsonrpc":"2.0","id":1,"method":"vm.fly"}`), api.CodeMethodNotFound, `unknown method "vm.fly"`},
		{"bad name", []byte(`{"jsonrpc":"2.0","id":1,"method":"vm.create","params":{"name":"Bad_Name","no_start":true}}`), api.CodeInvalidParams, `"Bad_Name"`},
		{"bad size", []byte(`{"jsonrpc":"2.0","id":1,"method":"vm.create","params":{"work_disk_size":"-1G","no_start":true}}`), api.CodeInvalidParams, `"-1G"`},
		{"unknown field", []byte(`{"jsonrpc":"2.0","id":1,"method":"vm.create","params":{"nmae":"x"}}`), api.CodeInvalidParams, "nmae"},
		{"huge", append(append([]byte(`{"jsonrpc":"2.0","id":1,"method":"vm.list","params":{"x":"`), []byte(strings.Repeat("a", 10<<20))...), '"', '}', '}'), api.CodeInvalidRequest, "larger than"},
		{"not jsonrpc", []byte(`{"id":1,"method":"vm.list"}`), api.CodeInvalidRequest, "invalid request"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := rawCall(t, sock, tc.line)
			if r.Error == nil || r.Error.Code != tc.code || !strings.Contains(r.Error.Message, tc.want) {
				t.Fatalf("got %+v, want code %d containing %q", r.Error, tc.code, tc.want)
			}
		})
	}
	// Still serving, and nothing was created.
	var vms []api.VM
	if err := c.Call(context.Background(), api.MethodVMList, api.VMListParams{All: true}, &vms); err != nil || len(vms) != 0 {
		t.Fatalf("after bad requests: %v %v", vms, err)
	}
}

// An oversized request is refused and the request after it on the same
// connection is still answered (readLine used to leave the reader past the
// oversized line's newline and the skip then ate the next request).
func TestOversizedRequestThenNext(t *testing.T) {
	d, _ := startTestDaemon(t)
	conn, err := net.Dial("unix", d.cfg.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	huge := append([]byte(`{"jsonrpc":"2.0","id":1,"method":"vm.list","params":{"x":"`), bytes.Repeat([]byte("a"), api.MaxRequestBytes)...)
	huge = append(huge, "\"}}\n"...)
	go func() {
		conn.Write(huge)
		conn.Write([]byte(`{"jsonrpc":"2.0","id":2,"method":"vm.list","params":{"all":true}}` + "\n"))
	}()
	sc := bufio.NewScanner(conn)
	sc.Buffer(nil, 1<<20)
	for _, want := range []string{"larger than", `"id":2,"result"`} {
		if !sc.Scan() {
			t.Fatalf("no answer containing %q: %v", want, sc.Err())
		}
		if !strings.Contains(sc.Text(), want) {
			t.Fatalf("answer %s, want %q", sc.Text(), want)
		}
	}
}

func TestErrorKindsSurviveWire(t *testing.T) {
	_, c := startTestDaemon(t)
	err := c.Call(context.Background(), api.MethodVMGet, api.NameParams{Name: "ghost"}, nil)
	if !api.IsKind(err, api.KindNotFound) {
		t.Fatalf("get ghost: %v (%s)", err, api.KindOf(err))
	}
	p := api.VMCreateParams{Name: "x", NoStart: true}
	if err := c.Call(context.Background(), api.MethodVMCreate, p, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Call(context.Background(), api.MethodVMCreate, p, nil); !api.IsKind(err, api.KindAlreadyExists) {
		t.Fatalf("dup: %v", err)
	}
	if err := c.Call(context.Background(), api.MethodVMCreate, api.VMCreateParams{VCPU: 999, NoStart: true}, nil); !api.IsKind(err, api.KindInvalidArgument) {
		t.Fatalf("vcpu: %v", err)
	}
}

func TestProgressStreamed(t *testing.T) {
	_, c := startTestDaemon(t)
	var stages []string
	c.OnProgress = func(p api.Progress) { stages = append(stages, p.Stage) }
	if err := c.Call(context.Background(), api.MethodVMCreate, api.VMCreateParams{NoStart: true}, nil); err != nil {
		t.Fatal(err)
	}
	if strings.Join(stages, ",") != "resolve_image,resolve_kernel,reserve_vm" {
		t.Fatalf("stages %v", stages)
	}
}

func TestSecondDaemonRefused(t *testing.T) {
	d, _ := startTestDaemon(t)
	_, err := New(context.Background(), d.cfg, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "in use by another banger daemon") {
		t.Fatalf("second daemon: %v", err)
	}
}

// A second daemon on another state dir is refused before it reconciles
// anything: by the runtime-dir lock when it shares the runtime dir, by the
// live socket when only the socket is shared. The first keeps its socket.
func TestSecondDaemonOnOtherStateDirTouchesNothing(t *testing.T) {
	d, c := startTestDaemon(t)
	other := d.cfg
	other.StateDir = t.TempDir()
	if _, err := New(context.Background(), other, io.Discard); err == nil || !strings.Contains(err.Error(), "runtime dir") {
		t.Fatalf("second daemon sharing the runtime dir: %v", err)
	}
	other.RuntimeDir = t.TempDir()
	if _, err := New(context.Background(), other, io.Discard); err == nil || !strings.Contains(err.Error(), "already listening on "+d.cfg.Socket) {
		t.Fatalf("second daemon sharing the socket: %v", err)
	}
	if _, err := os.Stat(filepath.Join(other.StateDir, "banger.db")); !os.IsNotExist(err) {
		t.Errorf("the refused daemon opened a store: %v", err)
	}
	var p api.PingResult
	if err := c.Call(context.Background(), api.MethodPing, nil, &p); err != nil {
		t.Fatalf("the first daemon stopped answering: %v", err)
	}
}

func TestDeleteRemovesDir(t *testing.T) {
	_, c := startTestDaemon(t)
	var vm api.VM
	if err := c.Call(context.Background(), api.MethodVMCreate, api.VMCreateParams{Name: "gone", NoStart: true}, &vm); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(vm.Dir); err != nil {
		t.Fatal(err)
	}
	if err := c.Call(context.Background(), api.MethodVMDelete, api.VMDeleteParams{Name: "gone"}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(vm.Dir); !os.IsNotExist(err) {
		t.Fatalf("dir still there: %v", err)
	}
	if err := c.Call(context.Background(), api.MethodVMDelete, api.VMDeleteParams{Name: "gone"}, nil); !api.IsKind(err, api.KindNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}

// TestEveryMethodRefusesUnknownFields sends each registered method (and
// the vm.proxy upgrade) a params object with a field no method has: the
// strict decode of the generic adapter must refuse it before any work,
// including methods that take no params.
func TestEveryMethodRefusesUnknownFields(t *testing.T) {
	d, c := startTestDaemon(t)
	names := []string{api.MethodVMProxy}
	for name := range d.handlers {
		names = append(names, name)
	}
	if len(names) < 27 {
		t.Fatalf("only %d methods registered: %v", len(names), names)
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			line := fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"method":%q,"params":{"no_such_field":1}}`, name)
			r := rawCall(t, d.cfg.Socket, []byte(line))
			if r.Error == nil || r.Error.Code != api.CodeInvalidParams || !strings.Contains(r.Error.Message, "no_such_field") {
				t.Fatalf("got %+v, want invalid params naming the field", r.Error)
			}
		})
	}
	// Absent and null params are the zero params.
	for _, line := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"daemon.ping"}`,
		`{"jsonrpc":"2.0","id":1,"method":"daemon.ping","params":null}`,
		`{"jsonrpc":"2.0","id":1,"method":"image.list","params":{}}`,
	} {
		if r := rawCall(t, d.cfg.Socket, []byte(line)); r.Error != nil {
			t.Fatalf("%s: %+v", line, r.Error)
		}
	}
	var p api.PingResult
	if err := c.Call(context.Background(), api.MethodPing, nil, &p); err != nil || p.PID != os.Getpid() {
		t.Fatalf("ping: %+v %v", p, err)
	}
}
