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
	"reflect"
	"strings"
	"syscall"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Kind classifies an error so it survives the wire: the CLI and SDK users
// branch on it (containerd's errdefs, reduced to what banger needs).
type Kind string

const (
	KindNotFound         Kind = "not_found"
	KindAlreadyExists    Kind = "already_exists"
	KindInvalidArgument  Kind = "invalid_argument"
	KindConflict         Kind = "conflict"
	KindUnauthenticated  Kind = "unauthenticated"
	KindPermissionDenied Kind = "permission_denied"
	KindCanceled         Kind = "canceled"
	KindDeadlineExceeded Kind = "deadline_exceeded"
	KindUnavailable      Kind = "unavailable"
	KindInternal         Kind = "internal"
)

// JSON-RPC 2.0 error codes. Banger's own kinds use the server-error range
// so generic JSON-RPC clients still see a sensible code.
const (
	CodeParseError     = -32700
	CodeInvalidRequest = -32600
	CodeMethodNotFound = -32601
	CodeInvalidParams  = -32602
	CodeInternal       = -32603
)

var kindCodes = map[Kind]int{
	KindNotFound:         -32001,
	KindAlreadyExists:    -32002,
	KindInvalidArgument:  CodeInvalidParams,
	KindConflict:         -32003,
	KindUnavailable:      -32004,
	KindUnauthenticated:  -32005,
	KindPermissionDenied: -32006,
	KindCanceled:         -32007,
	KindDeadlineExceeded: -32008,
	KindInternal:         CodeInternal,
}

// Error is an error with a kind. It is what the daemon returns and what the
// client reconstructs from the wire. Err is the cause (nil for none); when
// Errorf wrapped several errors Err is their errors.Join, so errors.Is and
// errors.As reach every one of them.
type Error struct {
	Kind    Kind
	Message string
	Err     error
}

func (e *Error) Error() string {
	if e.Message != "" {
		return e.Message
	}
	if e.Err != nil {
		return e.Err.Error()
	}
	return string(e.Kind)
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf builds an Error of the given kind. The message is fmt.Errorf's;
// every %w operand stays in the chain (one: it is Err; several: Err joins
// them), so use %w for an error argument and %v only to drop its chain on
// purpose.
func Errorf(kind Kind, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	var cause error
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		cause = u.Unwrap()
	case interface{ Unwrap() []error }:
		cause = errors.Join(u.Unwrap()...)
	}
	return &Error{Kind: kind, Message: err.Error(), Err: cause}
}

// KindOf returns the kind of err as the wire would carry it: Classify
// without extra sentinels ("" for nil).
func KindOf(err error) Kind { return Classify(err) }

// IsKind reports whether err has the given kind.
func IsKind(err error, k Kind) bool { return err != nil && KindOf(err) == k }

// CodeFor maps a kind to its JSON-RPC code.
func CodeFor(k Kind) int {
	if c, ok := kindCodes[k]; ok {
		return c
	}
	return CodeInternal
}

// Sentinel names an error value (matched like errors.Is) and the kind it
// means; the daemon passes its store's not-found/conflict errors.
type Sentinel struct {
	Err  error
	Kind Kind
}

// Classify returns the kind of err for the wire ("" for nil). It is the one
// place an error becomes a kind: layers below keep causes with %w and, where
// they know better than the cause, say so with an *Error.
//
// The error tree (Unwrap() error and Unwrap() []error, so %w, multiple %w
// and errors.Join) is searched in errors.Is order: outermost first, then
// each wrapped error depth-first, left to right. The first tier that
// matches anywhere in the tree decides:
//
//  1. The call ended: context.Canceled → canceled, context.DeadlineExceeded
//     → deadline_exceeded (also an *Error of either kind). Whatever a layer
//     called the failure it saw, it saw it because the context ended.
//  2. An explicit *Error whose kind is precise, i.e. anything but
//     unavailable and internal: the outermost one wins (the layer nearest
//     the caller knows best what the call meant: an import whose path does
//     not exist stays invalid_argument, not not_found).
//  3. A precise cause, first found: a registry error (*transport.Error)
//     whose code or status says 401/UNAUTHORIZED → unauthenticated,
//     403/DENIED → permission_denied, 404/MANIFEST_UNKNOWN/NAME_UNKNOWN/
//     BLOB_UNKNOWN/MANIFEST_BLOB_UNKNOWN → not_found, NAME_INVALID/
//     TAG_INVALID → invalid_argument (diagnostic codes are read before the
//     status); the extra sentinels; os.ErrNotExist → not_found;
//     os.ErrPermission → permission_denied. The search does not look inside
//     *net.OpError, *exec.Error or a fork/exec *fs.PathError for the os
//     errors: a failed unix-socket dial or a missing tool is not the
//     resource the caller named.
//  4. unavailable: an explicit *Error of kind unavailable, a registry error
//     with TOOMANYREQUESTS/UNAVAILABLE or status 408/429/5xx, a network
//     failure (*net.OpError, *net.DNSError, *url.Error, connection
//     refused/reset, host/network unreachable, an I/O timeout).
//  5. internal.
//
// So unavailable and internal are fallbacks, never masks: an explicit
// unavailable around a registry 401 reaches the caller as unauthenticated,
// and an explicit internal says no more than no kind at all. To keep a
// fallback kind whatever the cause, format the cause with %v.
func Classify(err error, extra ...Sentinel) Kind {
	if err == nil {
		return ""
	}
	var k Kind
	find := func(stop func(error) bool, match func(error) Kind) bool {
		walk(err, stop, func(e error) bool {
			k = match(e)
			return k != ""
		})
		return k != ""
	}
	if find(nil, endedKind) ||
		find(nil, explicitPreciseKind) ||
		find(osBoundary, func(e error) Kind { return preciseCauseKind(e, extra) }) ||
		find(nil, unavailableKind) {
		return k
	}
	return KindInternal
}

func endedKind(e error) Kind {
	if ae, ok := e.(*Error); ok && (ae.Kind == KindCanceled || ae.Kind == KindDeadlineExceeded) {
		return ae.Kind
	}
	switch {
	case is(e, context.Canceled):
		return KindCanceled
	case is(e, context.DeadlineExceeded):
		return KindDeadlineExceeded
	}
	return ""
}

func explicitPreciseKind(e error) Kind {
	if ae, ok := e.(*Error); ok && ae.Kind != "" && ae.Kind != KindUnavailable && ae.Kind != KindInternal {
		return ae.Kind
	}
	return ""
}

func preciseCauseKind(e error, extra []Sentinel) Kind {
	if te, ok := e.(*transport.Error); ok {
		if k := registryKind(te); k != KindUnavailable {
			return k
		}
		return ""
	}
	for _, s := range extra {
		if s.Err != nil && is(e, s.Err) {
			return s.Kind
		}
	}
	switch {
	case is(e, os.ErrNotExist):
		return KindNotFound
	case is(e, os.ErrPermission):
		return KindPermissionDenied
	}
	return ""
}

// osBoundary stops the os-error search at errors whose ENOENT/EACCES is
// about something other than what the caller named.
func osBoundary(e error) bool {
	switch x := e.(type) {
	case *net.OpError, *exec.Error:
		return true
	case *fs.PathError:
		return x.Op == "fork/exec" // os.StartProcess: the program is missing
	}
	return false
}

func unavailableKind(e error) Kind {
	switch x := e.(type) {
	case *Error:
		if x.Kind == KindUnavailable {
			return KindUnavailable
		}
	case *transport.Error:
		if registryKind(x) == KindUnavailable {
			return KindUnavailable
		}
	case *net.OpError, *net.DNSError, *url.Error:
		return KindUnavailable
	}
	for _, target := range []error{syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.ECONNABORTED,
		syscall.EHOSTUNREACH, syscall.ENETUNREACH, syscall.ETIMEDOUT, os.ErrDeadlineExceeded} {
		if is(e, target) {
			return KindUnavailable
		}
	}
	return ""
}

// registryKind maps a registry's answer (distribution spec error codes,
// then the HTTP status) to a kind; "" when neither says anything.
func registryKind(te *transport.Error) Kind {
	for _, d := range te.Errors {
		switch d.Code {
		case transport.UnauthorizedErrorCode:
			return KindUnauthenticated
		case transport.DeniedErrorCode:
			return KindPermissionDenied
		case transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode,
			transport.BlobUnknownErrorCode, transport.ManifestBlobUnknownErrorCode:
			return KindNotFound
		case transport.NameInvalidErrorCode, transport.TagInvalidErrorCode:
			return KindInvalidArgument
		case transport.TooManyRequestsErrorCode, transport.UnavailableErrorCode:
			return KindUnavailable
		}
	}
	switch s := te.StatusCode; {
	case s == 401:
		return KindUnauthenticated
	case s == 403:
		return KindPermissionDenied
	case s == 404:
		return KindNotFound
	case s == 408, s == 429, s >= 500 && s <= 599:
		return KindUnavailable
	}
	return ""
}

// is reports whether e itself (not what it wraps) matches target, the way
// errors.Is tests each link.
func is(e, target error) bool {
	if reflect.TypeOf(target).Comparable() && e == target {
		return true
	}
	if x, ok := e.(interface{ Is(error) bool }); ok && x.Is(target) {
		return true
	}
	return false
}

// maxWalk bounds the search of one error tree.
const maxWalk = 256

// walk visits err's tree in errors.Is order until visit returns true; it
// does not descend below an error for which stop (if set) is true.
func walk(err error, stop func(error) bool, visit func(error) bool) {
	n := 0
	var rec func(error) bool
	rec = func(e error) bool {
		if e == nil || n >= maxWalk {
			return false
		}
		n++
		if visit(e) {
			return true
		}
		if stop != nil && stop(e) {
			return false
		}
		switch u := e.(type) {
		case interface{ Unwrap() error }:
			return rec(u.Unwrap())
		case interface{ Unwrap() []error }:
			for _, c := range u.Unwrap() {
				if rec(c) {
					return true
				}
			}
		}
		return false
	}
	rec(err)
}

// Chain describes err's tree for logs: each link's type, outermost first
// (" > " between levels, "{a | b}" where an error wraps several), bounded.
func Chain(err error) string {
	n := 0
	var rec func(error) string
	rec = func(e error) string {
		if n >= 16 {
			return "…"
		}
		n++
		s := fmt.Sprintf("%T", e)
		if ae, ok := e.(*Error); ok && ae.Kind != "" {
			s += "(" + string(ae.Kind) + ")"
		}
		switch u := e.(type) {
		case interface{ Unwrap() error }:
			if c := u.Unwrap(); c != nil {
				s += " > " + rec(c)
			}
		case interface{ Unwrap() []error }:
			var parts []string
			for _, c := range u.Unwrap() {
				if c != nil {
					parts = append(parts, rec(c))
				}
			}
			if len(parts) > 0 {
				s += " > {" + strings.Join(parts, " | ") + "}"
			}
		}
		return s
	}
	if err == nil {
		return ""
	}
	return rec(err)
}
