package daemon

import (
	"context"
	"log/slog"
	"time"

	"banger/api"
	"banger/internal/model"
)

type progressKey struct{}

// withProgress attaches the caller's progress sink to ctx, so any layer can
// report stages without threading a callback through every signature.
func withProgress(ctx context.Context, fn func(api.Progress)) context.Context {
	return context.WithValue(ctx, progressKey{}, fn)
}

func report(ctx context.Context, p api.Progress) {
	if fn, ok := ctx.Value(progressKey{}).(func(api.Progress)); ok && fn != nil {
		fn(p)
	}
}

// operation is one logged unit of work: begin, stages, then fail or done,
// each a structured slog line carrying the operation id and durations.
type operation struct {
	ctx   context.Context
	log   *slog.Logger
	id    string
	name  string
	start time.Time
	last  time.Time
	vmID  string // the VM the operation reserved or works on, once known
}

func (d *Daemon) beginOperation(ctx context.Context, name string, attrs ...any) *operation {
	now := time.Now()
	op := &operation{ctx: ctx, id: model.NewID()[:12], name: name, start: now, last: now}
	op.log = d.log.With(append([]any{"op", name, "op_id", op.id}, attrs...)...)
	op.log.Info("begin")
	return op
}

// stage logs the start of a stage and streams it to the caller.
func (o *operation) stage(stage, msg string) {
	now := time.Now()
	o.log.Info("stage", "stage", stage, "msg", msg, "prev_stage_ms", now.Sub(o.last).Milliseconds())
	o.last = now
	report(o.ctx, api.Progress{Stage: stage, Message: msg, VMID: o.vmID})
}

// setVM names the VM the operation works on, in its log lines and in
// every progress event from now on.
func (o *operation) setVM(rec model.VMRecord) {
	o.vmID = rec.ID
	o.log = o.log.With("vm_id", rec.ID, "vm", rec.Name)
}

// fail logs the error with the kind it will carry on the wire and its
// cause chain (each link's type), and returns it, so callers can
// `return op.fail(err)`.
func (o *operation) fail(err error) error {
	o.log.Warn("fail", "err", err, "kind", errKind(err), "chain", api.Chain(err), "duration_ms", time.Since(o.start).Milliseconds())
	return err
}

func (o *operation) done() {
	o.log.Info("done", "duration_ms", time.Since(o.start).Milliseconds())
}
