package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"banger/api"
	"banger/internal/guestcp"
	"banger/internal/progressui"
)

func newVMCpCmd(a *app) *cobra.Command {
	var opt guestcp.Options
	cmd := &cobra.Command{
		Use:   "cp [-r] [-a] SRC... VM:DST | cp [-r] [-a] VM:SRC... DST",
		Short: "Copy files and trees between the host and a VM over SFTP (no guest network needed)",
		Long: `Copy files and directory trees between the host and a VM, like docker cp
and scp. One side is VM:PATH; a colon before any slash marks it (write ./a:b
for a host file with a colon). "-" is a tar stream: "vm cp - VM:DIR"
extracts stdin into DIR, "vm cp VM:PATH -" writes PATH as a tar to stdout.

The host side is read and written by this command with your rights.
Symlinks are copied as symlinks. Without -a, files and directories keep
their permission bits; with -a also setuid/setgid/sticky bits, times and
(where allowed) owners.`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runCp(cmd.Context(), a, args, opt)
		},
	}
	cmd.Flags().BoolVarP(&opt.Recursive, "recursive", "r", false, "copy directories")
	cmd.Flags().BoolVarP(&opt.Archive, "archive", "a", false, "keep modes, times and owners")
	return cmd
}

// cpArg is one side of a copy: a host path, "-", or VM:PATH.
type cpArg struct {
	vm, path string
	stream   bool // "-"
}

func (c cpArg) remote() bool { return c.vm != "" }

func (c cpArg) String() string {
	if c.remote() {
		return c.vm + ":" + c.path
	}
	return c.path
}

// parseCpArg follows scp: a colon before the first slash makes VM:PATH.
func parseCpArg(s string) (cpArg, error) {
	if s == "-" {
		return cpArg{path: s, stream: true}, nil
	}
	if s == "" {
		return cpArg{}, usageErr("empty path")
	}
	i := strings.IndexByte(s, ':')
	if i < 0 || strings.Contains(s[:i], "/") {
		return cpArg{path: s}, nil
	}
	if i == 0 {
		return cpArg{}, usageErr("%q: no VM name before the colon (write ./%s for a host path)", s, s)
	}
	if s[i+1:] == "" {
		return cpArg{}, usageErr("%q: no path after the colon (e.g. %s/root/)", s, s)
	}
	return cpArg{vm: s[:i], path: s[i+1:]}, nil
}

func usageErr(format string, args ...any) error {
	return api.Errorf(api.KindInvalidArgument, "vm cp: "+format, args...)
}

// cpJob is a parsed `vm cp`.
type cpJob struct {
	srcs []cpArg
	dst  cpArg
	vm   string
	up   bool // host → guest
}

func parseCp(args []string) (cpJob, error) {
	var j cpJob
	for i, s := range args {
		c, err := parseCpArg(s)
		if err != nil {
			return j, err
		}
		if i == len(args)-1 {
			j.dst = c
		} else {
			j.srcs = append(j.srcs, c)
		}
	}
	remoteSrcs := 0
	for _, s := range j.srcs {
		if s.remote() {
			remoteSrcs++
			if j.vm != "" && s.vm != j.vm {
				return j, usageErr("sources in two VMs (%s and %s): copy from one VM at a time", j.vm, s.vm)
			}
			j.vm = s.vm
		}
		if s.stream && len(j.srcs) > 1 {
			return j, usageErr(`"-" (a tar on stdin) must be the only source`)
		}
	}
	switch {
	case remoteSrcs == 0 && !j.dst.remote():
		return j, usageErr("both sides are on the host: one must be VM:PATH")
	case remoteSrcs > 0 && j.dst.remote():
		return j, usageErr("both sides are in VMs: copy through the host (vm cp VM:SRC - | banger vm cp - VM2:DIR)")
	case remoteSrcs > 0 && remoteSrcs < len(j.srcs):
		return j, usageErr("mixed host and VM sources: the sources must all be on one side")
	}
	if j.dst.remote() {
		j.up, j.vm = true, j.dst.vm
	}
	return j, nil
}

func runCp(ctx context.Context, a *app, args []string, opt guestcp.Options) error {
	j, err := parseCp(args)
	if err != nil {
		return err
	}
	var hostSrcs []string
	for _, s := range j.srcs {
		if !s.stream {
			hostSrcs = append(hostSrcs, s.path)
		}
	}
	// Host sources are checked before anything else: a missing or
	// unreadable one fails here, before a connection and before any
	// byte is written.
	if j.up && len(hostSrcs) > 0 {
		if _, err := guestcp.PlanLocal(hostSrcs, opt); err != nil {
			return err
		}
	}
	g, err := dialGuest(ctx, a, j.vm)
	if err != nil {
		return err
	}
	defer g.Close()
	var remoteSrcs []string
	for _, s := range j.srcs {
		if s.remote() {
			remoteSrcs = append(remoteSrcs, s.path)
		}
	}
	switch {
	case j.up && j.srcs[0].stream:
		bar := newCopyBar(0)
		opt.Progress = bar.add
		skipped, err := g.ExtractTar(ctx, os.Stdin, j.dst.path, opt)
		bar.done()
		for _, s := range skipped {
			fmt.Fprintf(os.Stderr, "banger: vm cp: %s: not a file, directory or link in the tar: skipped\n", s)
		}
		return err
	case j.up:
		return runPlan(opt, func(o guestcp.Options) error { return g.CopyIn(ctx, hostSrcs, j.dst.path, o) })
	case j.dst.stream:
		if term.IsTerminal(int(os.Stdout.Fd())) {
			return usageErr("refusing to write a tar to a terminal: redirect stdout (vm cp %s - > x.tar)", j.srcs[0])
		}
		bar := newCopyBar(0)
		opt.Progress = bar.add
		err := g.WriteTar(ctx, remoteSrcs, os.Stdout, opt)
		bar.done()
		return err
	default:
		return runPlan(opt, func(o guestcp.Options) error { return g.CopyOut(ctx, remoteSrcs, j.dst.path, o) })
	}
}

// runPlan runs a planned copy with a bar sized by the plan's bytes.
func runPlan(opt guestcp.Options, run func(guestcp.Options) error) error {
	var bar *copyBar
	opt.Planned = func(total int64) { bar = newCopyBar(total) }
	opt.Progress = func(d int64) { bar.add(d) }
	err := run(opt)
	if bar != nil {
		bar.done()
	}
	return err
}

// copyBar draws a progress bar on stderr when it is a terminal and the
// copy is large (or its size unknown, as for a tar stream).
type copyBar struct {
	mu    sync.Mutex
	total int64
	n     int64
	start time.Time
	last  time.Time
	on    bool
	drawn bool
}

// copyBarMin is the smallest copy that gets a bar: below it a copy is over
// before a bar would say anything.
const copyBarMin = 4 << 20

func newCopyBar(total int64) *copyBar {
	b := &copyBar{total: total, start: time.Now()}
	b.on = term.IsTerminal(int(os.Stderr.Fd())) && (total == 0 || total >= copyBarMin)
	return b
}

func (b *copyBar) add(d int64) {
	if !b.on {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.n += d
	if now := time.Now(); now.Sub(b.last) >= 200*time.Millisecond {
		b.last = now
		b.draw()
	}
}

func (b *copyBar) draw() {
	el := time.Since(b.start).Seconds()
	rate := ""
	if el > 0 {
		rate = progressui.HumanBytes(int64(float64(b.n)/el)) + "/s"
	}
	line := fmt.Sprintf("  copy %s %s", progressui.HumanBytes(b.n), rate)
	if b.total > 0 {
		pct := min(float64(b.n)/float64(b.total), 1)
		bar := strings.Repeat("=", int(pct*30)) + strings.Repeat(" ", 30-int(pct*30))
		line = fmt.Sprintf("  copy [%s] %s/%s %s", bar, progressui.HumanBytes(b.n), progressui.HumanBytes(b.total), rate)
	}
	fmt.Fprintf(os.Stderr, "\r\033[K%s", line)
	b.drawn = true
}

func (b *copyBar) done() {
	if !b.on {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.drawn || b.n > 0 {
		b.draw()
		fmt.Fprintln(os.Stderr)
	}
	b.on = false
}
