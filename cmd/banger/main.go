// Command banger is the CLI and, as `banger daemon`, the daemon.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"banger/api"
)

// exitError carries an exit status (e.g. the guest command's) out of cobra.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func main() {
	ctx, stop := signalContext()
	root := newRootCmd()
	err := root.ExecuteContext(ctx)
	stop()
	if err == nil {
		return
	}
	var ee *exitError
	if errors.As(err, &ee) {
		os.Exit(ee.code)
	}
	fmt.Fprintln(os.Stderr, "banger:", err)
	var ue *api.UnreachableError
	switch {
	case signalOf(ctx) != 0:
		os.Exit(128 + int(signalOf(ctx))) // the shell's convention: 130 for ^C
	case errors.As(err, &ue):
		os.Exit(69) // EX_UNAVAILABLE
	case api.IsKind(err, api.KindInvalidArgument):
		os.Exit(2)
	}
	os.Exit(1)
}

// signalError is the cancel cause of the command's context once SIGINT,
// SIGTERM or SIGHUP arrived, so a command that cleans up knows which
// (`vm run --rm` exits 128+n after removing its VM).
type signalError struct{ sig syscall.Signal }

func (e *signalError) Error() string { return "interrupted by " + e.sig.String() }

// signalContext is cancelled by the first SIGINT, SIGTERM or SIGHUP. Later
// ones are swallowed until stop, so a second ^C cannot cut short the
// (bounded) cleanup that the first one started.
func signalContext() (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		if s, ok := <-ch; ok {
			cancel(&signalError{sig: s.(syscall.Signal)})
		}
	}()
	return ctx, func() { signal.Stop(ch); cancel(nil) }
}

// signalOf returns the signal that cancelled ctx, or 0.
func signalOf(ctx context.Context) syscall.Signal {
	var se *signalError
	if errors.As(context.Cause(ctx), &se) {
		return se.sig
	}
	return 0
}
