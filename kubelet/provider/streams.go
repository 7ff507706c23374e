package provider

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	vkapi "github.com/virtual-kubelet/virtual-kubelet/node/api"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"

	"banger/client"
)

// vmOf returns the name of the pod's VM, or a not-found error.
func (p *Provider) vmOf(namespace, name string) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s, ok := p.byKey[key(namespace, name)]
	if !ok {
		return "", errdefs.NotFoundf("pod %s/%s is not on this node", namespace, name)
	}
	if s.vm == nil {
		return "", errdefs.NotFoundf("pod %s/%s has no VM yet (%s)", namespace, name, orStr(s.stage, "creating"))
	}
	return s.vm.Name, nil
}

// guestOf opens an SSH session to the pod's VM through the daemon.
func (p *Provider) guestOf(ctx context.Context, namespace, pod string) (*client.Guest, error) {
	name, err := p.vmOf(namespace, pod)
	if err != nil {
		return nil, err
	}
	return p.c.Guest(ctx, name)
}

func orStr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// GetContainerLogs is `vm logs`: the VM's console, where the main process
// writes (after the kernel's and banger-init's boot lines). Tail and
// LimitBytes are honoured; Follow streams until the VM stops or the caller
// goes.
func (p *Provider) GetContainerLogs(ctx context.Context, namespace, podName, containerName string, opts vkapi.ContainerLogOpts) (io.ReadCloser, error) {
	name, err := p.vmOf(namespace, podName)
	if err != nil {
		return nil, err
	}
	if opts.Previous {
		return nil, errdefs.InvalidInput("--previous: a banger pod's VM has no previous instance")
	}
	res, err := p.c.Logs(ctx, name, 0)
	if err != nil {
		return nil, err
	}
	head := []byte(res.Data)
	if opts.Tail > 0 {
		head = tailLines(head, opts.Tail)
	}
	if opts.LimitBytes > 0 && len(head) > opts.LimitBytes {
		head = head[:opts.LimitBytes]
	}
	if !opts.Follow {
		return io.NopCloser(bytes.NewReader(head)), nil
	}
	pr, pw := io.Pipe()
	go func() {
		if _, err := pw.Write(head); err != nil {
			return
		}
		pw.CloseWithError(p.c.FollowLogsFrom(ctx, name, pw, res.Offset, true, 500*time.Millisecond))
	}()
	return pr, nil
}

// tailLines keeps the last n lines of b.
func tailLines(b []byte, n int) []byte {
	end := len(b)
	if end > 0 && b[end-1] == '\n' {
		end--
	}
	for i := end - 1; i >= 0; i-- {
		if b[i] == '\n' {
			n--
			if n == 0 {
				return b[i+1:]
			}
		}
	}
	return b
}

// exitError carries a command's non-zero status the way virtual-kubelet's
// exec stream reports it to kubectl (k8s.io/utils/exec.ExitError).
type exitError struct{ code int }

func (e exitError) Error() string   { return "command terminated with exit code " + strconv.Itoa(e.code) }
func (e exitError) String() string  { return e.Error() }
func (e exitError) Exited() bool    { return true }
func (e exitError) ExitStatus() int { return e.code }

// RunInContainer is `vm exec` (`kubectl exec [-it]`): the command runs in
// the VM through banger's agent, with a terminal when asked.
func (p *Provider) RunInContainer(ctx context.Context, namespace, podName, containerName string, cmd []string, attach vkapi.AttachIO) error {
	g, err := p.guestOf(ctx, namespace, podName)
	if err != nil {
		return err
	}
	defer g.Close()
	o := client.ExecOptions{Stdin: attach.Stdin()}
	if w := attach.Stdout(); w != nil {
		o.Stdout = w
		defer w.Close()
	}
	if w := attach.Stderr(); w != nil {
		o.Stderr = w
		defer w.Close()
	}
	var code int
	if attach.TTY() {
		resize := make(chan client.TermSize, 1)
		size := client.TermSize{Cols: 80, Rows: 24}
		if rs := attach.Resize(); rs != nil {
			select {
			case first := <-rs:
				size = client.TermSize{Cols: int(first.Width), Rows: int(first.Height)}
			case <-time.After(200 * time.Millisecond):
			}
			go func() {
				for {
					select {
					case <-ctx.Done():
						return
					case sz, ok := <-rs:
						if !ok {
							return
						}
						select {
						case resize <- client.TermSize{Cols: int(sz.Width), Rows: int(sz.Height)}:
						default:
						}
					}
				}
			}()
		}
		code, err = g.ExecPTY(ctx, cmd, "xterm", size, resize, o)
	} else {
		code, err = g.Exec(ctx, cmd, o)
	}
	if err != nil {
		return err
	}
	if code != 0 {
		return exitError{code}
	}
	return nil
}

// AttachToContainer is refused: the main process's stdio is the console
// (kubectl logs -f reads it); there is no stdin to attach to.
func (p *Provider) AttachToContainer(ctx context.Context, namespace, podName, containerName string, attach vkapi.AttachIO) error {
	return errdefs.InvalidInput("kubectl attach is not supported on banger nodes: use kubectl logs -f or kubectl exec -it")
}

// PortForward is `kubectl port-forward`: a TCP connection to the port on
// the guest's loopback, carried as an SSH direct-tcpip channel through the
// daemon's vm.proxy, so it works wherever the daemon and its bridge live.
func (p *Provider) PortForward(ctx context.Context, namespace, pod string, port int32, stream io.ReadWriteCloser) error {
	g, err := p.guestOf(ctx, namespace, pod)
	if err != nil {
		return err
	}
	defer g.Close()
	conn, err := g.SSH().DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
	if err != nil {
		return fmt.Errorf("port-forward to pod %s/%s port %d: %w", namespace, pod, port, err)
	}
	defer conn.Close()
	done := make(chan struct{}, 2)
	go func() { io.Copy(conn, stream); done <- struct{}{} }()
	go func() { io.Copy(stream, conn); done <- struct{}{} }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	return nil
}

// GetStatsSummary is not provided yet (kubectl top needs metrics-server).
func (p *Provider) GetStatsSummary(context.Context) (*statsv1alpha1.Summary, error) {
	return nil, errdefs.InvalidInput("stats are not provided by banger nodes yet (banger vm stats has them)")
}

// GetMetricsResource is not provided yet.
func (p *Provider) GetMetricsResource(context.Context) ([]*dto.MetricFamily, error) {
	return nil, errdefs.InvalidInput("metrics are not provided by banger nodes yet")
}
