package client_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"strings"

	"banger/api"
	"banger/client"
)

// This example boots a VM, runs a command with stdin and reads its exit
// code, copies a file in, follows the console log until the VM's main
// process has seen the file, and removes the VM. It needs a running
// daemon ($BANGER_SOCKET or /run/banger/banger.sock); TestSDKLifecycle
// runs the same steps against one it starts.
func Example() {
	ctx := context.Background()
	c, err := client.Connect(ctx, api.SocketFromEnv())
	if err != nil {
		log.Fatal(err)
	}
	if err := lifecycle(ctx, c, "sdk-example", os.Stdout); err != nil {
		log.Fatal(err)
	}
}

// mainScript is the VM's main process: it writes to the console, waits
// for the file CopyIn puts there, and prints it.
const mainScript = `echo sdk-main-started; while [ ! -e /root/in.txt ]; do sleep 0.2; done; echo "sdk-copied: $(cat /root/in.txt)"; exec sleep 100000`

// lifecycle is the example's body; it reports what it sees on w.
func lifecycle(ctx context.Context, c *client.Client, name string, w io.Writer) (err error) {
	vm, err := c.CreateVM(ctx, api.VMCreateParams{
		Name:       name,
		Entrypoint: &[]string{"/bin/sh", "-c", mainScript},
	}, func(p api.Progress) { fmt.Fprintf(w, "progress: %s\n", p.Stage) })
	if err != nil {
		return err
	}
	defer func() {
		if _, rerr := c.RemoveVM(context.WithoutCancel(ctx), api.VMDeleteParams{Name: vm.ID, Force: true}); rerr != nil && err == nil {
			err = rerr
		}
		fmt.Fprintf(w, "removed %s\n", name)
	}()
	fmt.Fprintf(w, "created %s state=%s ip=%s\n", vm.Name, vm.State, vm.GuestIP)

	// Exec with stdin, stdout, stderr and an exit code.
	var stdout, stderr bytes.Buffer
	code, err := c.Exec(ctx, name, []string{"sh", "-c", "wc -c; echo oops >&2; exit 7"}, client.ExecOptions{
		Stdin: strings.NewReader("12345"), Stdout: &stdout, Stderr: &stderr,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "exec: exit=%d stdout=%q stderr=%q\n", code, strings.TrimSpace(stdout.String()), strings.TrimSpace(stderr.String()))

	// Follow the console log in the background until the main process
	// reports the copied file.
	logCtx, stopLogs := context.WithCancel(ctx)
	defer stopLogs()
	started := make(chan struct{})
	copied := make(chan struct{})
	follow := make(chan error, 1)
	go func() {
		follow <- c.FollowLogs(logCtx, name, &watcher{marks: []mark{
			{"sdk-main-started", started}, {"sdk-copied: hello from the sdk", copied},
		}}, true, 0)
	}()
	select {
	case <-started:
	case err := <-follow:
		return fmt.Errorf("logs ended before the main process started: %v", err)
	}
	fmt.Fprintln(w, "logs: main process started")

	// Copy a file in; the main process, waiting for it, prints it.
	src := filepath.Join(os.TempDir(), name+"-in.txt")
	if err := os.WriteFile(src, []byte("hello from the sdk"), 0o644); err != nil {
		return err
	}
	defer os.Remove(src)
	g, err := c.Guest(ctx, name)
	if err != nil {
		return err
	}
	defer g.Close()
	if err := g.CopyIn(ctx, []string{src}, "/root/in.txt", client.CopyOptions{}); err != nil {
		return err
	}
	var cat bytes.Buffer
	if _, err := g.Exec(ctx, []string{"cat", "/root/in.txt"}, client.ExecOptions{Stdout: &cat}); err != nil {
		return err
	}
	fmt.Fprintf(w, "copied: %q\n", cat.String())
	select {
	case <-copied:
	case err := <-follow:
		return fmt.Errorf("logs ended before the copy showed: %v", err)
	}
	fmt.Fprintln(w, "logs: main process saw the copy")
	stopLogs()
	if err := <-follow; err != nil {
		return err
	}
	return nil
}

// watcher closes each mark's channel once its text has appeared in what
// was written.
type watcher struct {
	seen  bytes.Buffer
	marks []mark
}

type mark struct {
	text string
	ch   chan struct{}
}

func (w *watcher) Write(p []byte) (int, error) {
	w.seen.Write(p)
	for i := range w.marks {
		if m := &w.marks[i]; m.ch != nil && bytes.Contains(w.seen.Bytes(), []byte(m.text)) {
			close(m.ch)
			m.ch = nil
		}
	}
	return len(p), nil
}
