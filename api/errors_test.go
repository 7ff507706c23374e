package api

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"banger/internal/testenv"
)

var errSentinelGone = errors.New("row gone")

func regErr(status int, codes ...transport.ErrorCode) *transport.Error {
	e := &transport.Error{StatusCode: status}
	for _, c := range codes {
		e.Errors = append(e.Errors, transport.Diagnostic{Code: c, Message: "registry says " + string(c)})
	}
	return e
}

// wrapN wraps err n times with %w, alternating fmt.Errorf and Errorf of a
// fallback kind (which must not mask the cause).
func wrapN(err error, n int) error {
	for i := 0; i < n; i++ {
		if i%2 == 0 {
			err = fmt.Errorf("level %d: %w", i, err)
		} else {
			err = Errorf(KindInternal, "level %d: %w", i, err)
		}
	}
	return err
}

func TestClassifyRules(t *testing.T) {
	_, notExist := os.Open(filepath.Join(t.TempDir(), "missing"))
	// A refused dial: a port just closed, tried afresh a few times in case
	// another process takes it in between.
	var refused error
	for i := 0; i < 5 && refused == nil; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		var c net.Conn
		if c, refused = net.Dial("tcp", addr); refused == nil {
			c.Close()
		}
	}
	if refused == nil {
		testenv.Skip(t, "a dial to a just-closed loopback port succeeded 5 times: something here accepts on any port")
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	timedOut, cancel2 := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel2()
	<-timedOut.Done()

	cases := []struct {
		name string
		err  error
		want Kind
	}{
		{"explicit not_found", Errorf(KindNotFound, "vm %q not found", "x"), KindNotFound},
		{"explicit conflict", Errorf(KindConflict, "busy"), KindConflict},
		{"explicit unavailable", Errorf(KindUnavailable, "no hypervisor"), KindUnavailable},
		{"context.Canceled", context.Canceled, KindCanceled},
		{"ctx.Err() canceled", cancelled.Err(), KindCanceled},
		{"context.DeadlineExceeded", context.DeadlineExceeded, KindDeadlineExceeded},
		{"ctx.Err() deadline", timedOut.Err(), KindDeadlineExceeded},
		{"url.Error around canceled", &url.Error{Op: "Get", URL: "http://x", Err: context.Canceled}, KindCanceled},
		{"registry 401 UNAUTHORIZED", regErr(401, transport.UnauthorizedErrorCode), KindUnauthenticated},
		{"registry 401 no body", regErr(401), KindUnauthenticated},
		{"registry 403 DENIED", regErr(403, transport.DeniedErrorCode), KindPermissionDenied},
		{"registry DENIED any status", regErr(400, transport.DeniedErrorCode), KindPermissionDenied},
		{"registry 404 MANIFEST_UNKNOWN", regErr(404, transport.ManifestUnknownErrorCode), KindNotFound},
		{"registry 404 NAME_UNKNOWN", regErr(404, transport.NameUnknownErrorCode), KindNotFound},
		{"registry 404 BLOB_UNKNOWN", regErr(404, transport.BlobUnknownErrorCode), KindNotFound},
		{"registry 404 no body", regErr(404), KindNotFound},
		{"registry NAME_INVALID", regErr(400, transport.NameInvalidErrorCode), KindInvalidArgument},
		{"registry 429", regErr(429, transport.TooManyRequestsErrorCode), KindUnavailable},
		{"registry 503", regErr(503), KindUnavailable},
		{"registry 500 UNKNOWN", regErr(500, transport.UnknownErrorCode), KindUnavailable},
		{"registry 400 unknown code", regErr(400, transport.UnsupportedErrorCode), KindInternal},
		{"url.Error around registry 401", &url.Error{Op: "Get", URL: "http://r/token", Err: regErr(401, transport.UnauthorizedErrorCode)}, KindUnauthenticated},
		{"os.ErrNotExist (real open)", notExist, KindNotFound},
		{"os.ErrPermission", &fs.PathError{Op: "open", Path: "/x", Err: syscall.EACCES}, KindPermissionDenied},
		{"extra sentinel", errSentinelGone, KindNotFound},
		{"connection refused (real dial)", refused, KindUnavailable},
		{"bare ECONNRESET", syscall.ECONNRESET, KindUnavailable},
		{"DNS error", &net.DNSError{Err: "no such host", Name: "x.invalid"}, KindUnavailable},
		{"url.Error around EOF", &url.Error{Op: "Get", URL: "http://x", Err: errors.New("EOF")}, KindUnavailable},
		{"i/o timeout", os.ErrDeadlineExceeded, KindUnavailable},
		{"ENOENT inside a dial is a network failure", &net.OpError{Op: "dial", Net: "unix", Err: os.NewSyscallError("connect", syscall.ENOENT)}, KindUnavailable},
		{"plain error", errors.New("boom"), KindInternal},
		{"explicit internal", Errorf(KindInternal, "boom"), KindInternal},
	}
	for _, c := range cases {
		for depth := 0; depth <= 3; depth++ {
			t.Run(fmt.Sprintf("%s/depth%d", c.name, depth), func(t *testing.T) {
				err := wrapN(c.err, depth)
				if got := Classify(err, Sentinel{Err: errSentinelGone, Kind: KindNotFound}); got != c.want {
					t.Fatalf("Classify(%v) = %s, want %s (chain %s)", err, got, c.want, Chain(err))
				}
				// errors.Join with an unrelated error decides the same way.
				joined := errors.Join(errors.New("unrelated"), err)
				if got := Classify(joined, Sentinel{Err: errSentinelGone, Kind: KindNotFound}); got != c.want {
					t.Fatalf("Classify(Join(_, %v)) = %s, want %s", err, got, c.want)
				}
				// As the second of two %w in one Errorf.
				two := Errorf(KindInternal, "a: %w; b: %w", errors.New("unrelated"), err)
				if got := Classify(two, Sentinel{Err: errSentinelGone, Kind: KindNotFound}); got != c.want {
					t.Fatalf("Classify(Errorf(_, %%w, %%w)) = %s, want %s", got, c.want)
				}
			})
		}
	}
	if got := Classify(nil); got != "" {
		t.Fatalf("Classify(nil) = %q", got)
	}
}

func TestClassifyPrecedence(t *testing.T) {
	reg401 := regErr(401, transport.UnauthorizedErrorCode)
	cases := []struct {
		name string
		err  error
		want Kind
	}{
		{"explicit unavailable does not mask a registry 401",
			Errorf(KindUnavailable, "pull image %q: %w", "r", fmt.Errorf("fetch manifest: %w", reg401)), KindUnauthenticated},
		{"explicit internal does not mask not-exist",
			Errorf(KindInternal, "build: %w", fs.ErrNotExist), KindNotFound},
		{"explicit internal does not mask a network failure",
			Errorf(KindInternal, "x: %w", syscall.ECONNREFUSED), KindUnavailable},
		{"explicit precise kind beats a precise cause",
			Errorf(KindInvalidArgument, "image import: %w", fs.ErrNotExist), KindInvalidArgument},
		{"outermost explicit precise kind wins",
			Errorf(KindConflict, "outer: %w", Errorf(KindNotFound, "inner")), KindConflict},
		{"inner precise kind beats outer fallback",
			Errorf(KindUnavailable, "outer: %w", Errorf(KindNotFound, "inner")), KindNotFound},
		{"cancellation beats an explicit precise kind",
			Errorf(KindInvalidArgument, "import: %w", fmt.Errorf("layer 1: %w", context.Canceled)), KindCanceled},
		{"deadline beats a registry error in a join",
			errors.Join(reg401, context.DeadlineExceeded), KindDeadlineExceeded},
		{"first precise cause in errors.Is order",
			errors.Join(fmt.Errorf("a: %w", reg401), fs.ErrNotExist), KindUnauthenticated},
		{"precise cause beats an unavailable one",
			errors.Join(syscall.ECONNRESET, fs.ErrPermission), KindPermissionDenied},
		{"a missing tool is not not_found",
			func() error { _, err := exec.Command("/nonexistent/tool").Output(); return err }(), KindInternal},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Classify(c.err); got != c.want {
				t.Fatalf("Classify(%v) = %s, want %s (chain %s)", c.err, got, c.want, Chain(c.err))
			}
		})
	}
}

func TestErrorfKeepsEveryCause(t *testing.T) {
	reg := regErr(401, transport.UnauthorizedErrorCode)
	a := &fs.PathError{Op: "open", Path: "/a", Err: syscall.ENOENT}
	err := Errorf(KindUnavailable, "pull %s: %w (also %w)", "x", reg, a)
	if err.Error() != "pull x: "+reg.Error()+" (also open /a: no such file or directory)" {
		t.Fatalf("message: %q", err.Error())
	}
	var te *transport.Error
	if !errors.As(err, &te) || te != reg {
		t.Fatalf("errors.As transport.Error through two %%w: %v", te)
	}
	var pe *fs.PathError
	if !errors.As(err, &pe) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("the second wrapped error was lost")
	}
	var ae *Error
	if !errors.As(err, &ae) || ae.Kind != KindUnavailable {
		t.Fatal("not an *Error")
	}
	// One %w: the cause is the wrapped error itself.
	one := Errorf(KindNotFound, "x: %w", a)
	if errors.Unwrap(one) != a {
		t.Fatalf("Unwrap = %v", errors.Unwrap(one))
	}
	// %v drops the chain on purpose.
	if errors.Is(Errorf(KindInternal, "x: %v", a), fs.ErrNotExist) {
		t.Fatal("formatting with v-verb kept the chain")
	}
	if c := Chain(err); !strings.Contains(c, "*api.Error(unavailable) > *errors.joinError > {*transport.Error | *fs.PathError > syscall.Errno}") {
		t.Fatalf("chain: %s", c)
	}
}

func TestKindCodes(t *testing.T) {
	seen := map[int]Kind{}
	for k, c := range kindCodes {
		if prev, ok := seen[c]; ok {
			t.Fatalf("%s and %s share code %d", k, prev, c)
		}
		seen[c] = k
		if k != KindInvalidArgument && k != KindInternal && (c > -32000 || c < -32099) {
			t.Fatalf("%s: code %d is outside the JSON-RPC server-error range", k, c)
		}
	}
	for _, k := range []Kind{KindUnauthenticated, KindPermissionDenied, KindCanceled, KindDeadlineExceeded} {
		if CodeFor(k) == CodeInternal {
			t.Fatalf("%s has no code", k)
		}
	}
}
