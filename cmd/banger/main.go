// Command banger is the CLI and, as `banger daemon`, the daemon.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"banger/internal/api"
)

// exitError carries an exit status (e.g. the guest command's) out of cobra.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
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
	case errors.As(err, &ue):
		os.Exit(69) // EX_UNAVAILABLE
	case api.IsKind(err, api.KindInvalidArgument):
		os.Exit(2)
	}
	os.Exit(1)
}
