package api

import (
	"errors"
	"fmt"
)

// Kind classifies an error so it survives the wire: the CLI and SDK users
// branch on it (containerd's errdefs, reduced to what banger needs).
type Kind string

const (
	KindNotFound        Kind = "not_found"
	KindAlreadyExists   Kind = "already_exists"
	KindInvalidArgument Kind = "invalid_argument"
	KindConflict        Kind = "conflict"
	KindUnavailable     Kind = "unavailable"
	KindInternal        Kind = "internal"
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
	KindNotFound:        -32001,
	KindAlreadyExists:   -32002,
	KindInvalidArgument: CodeInvalidParams,
	KindConflict:        -32003,
	KindUnavailable:     -32004,
	KindInternal:        CodeInternal,
}

// Error is an error with a kind. It is what the daemon returns and what the
// client reconstructs from the wire.
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

// Errorf builds an Error of the given kind; %w wraps as usual.
func Errorf(kind Kind, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &Error{Kind: kind, Message: err.Error(), Err: errors.Unwrap(err)}
}

// KindOf returns the kind of err (internal if it carries none).
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindInternal
}

// IsKind reports whether err has the given kind.
func IsKind(err error, k Kind) bool { return err != nil && KindOf(err) == k }

// CodeFor maps a kind to its JSON-RPC code.
func CodeFor(k Kind) int {
	if c, ok := kindCodes[k]; ok {
		return c
	}
	return CodeInternal
}
