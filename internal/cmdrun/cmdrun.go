// Package cmdrun runs an external tool (apt-get, dpkg-deb, debootstrap)
// whose output is progress for the user and, on failure, the explanation.
package cmdrun

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"
)

// tailLines is how many last output lines a failure carries.
const tailLines = 5

// Lines runs cmd, made by the caller with exec.CommandContext(ctx, …) and
// any Dir, Env, SysProcAttr or Cancel it needs, passes each non-empty
// output line (stdout and stderr merged) to line (may be nil), and returns
// an error carrying the last output lines, or ctx's error if ctx ended.
func Lines(ctx context.Context, cmd *exec.Cmd, line func(string)) error {
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return err
	}
	var tail []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			l := strings.TrimSpace(sc.Text())
			if l == "" {
				continue
			}
			if line != nil {
				line(l)
			}
			if tail = append(tail, l); len(tail) > tailLines {
				tail = tail[1:]
			}
		}
		io.Copy(io.Discard, pr)
	}()
	err := cmd.Wait()
	pw.Close()
	<-done
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%v: %s", err, strings.Join(tail, " | "))
	}
	return nil
}
