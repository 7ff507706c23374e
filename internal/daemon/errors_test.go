package daemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"banger/api"
	"banger/internal/testfixture"
)

// pushRandom pushes a small random one-layer image to host as repo:tag and
// returns the ref and the image.
func pushRandom(t *testing.T, host, repo, tag string) (string, v1.Image) {
	t.Helper()
	img, err := random.Image(4096, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref := host + "/" + repo + ":" + tag
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	return ref, img
}

func writeRegistryError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"errors":[{"code":%q,"message":%q}]}`, code, msg)
}

// pullRaw sends image.pull on a raw connection and returns the response
// (skipping the progress notifications before it).
func pullRaw(t *testing.T, sock, ref string) api.Response {
	t.Helper()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	line, _ := json.Marshal(api.Request{JSONRPC: "2.0", ID: json.RawMessage(`7`), Method: api.MethodImagePull,
		Params: json.RawMessage(fmt.Sprintf(`{"ref":%q}`, ref))})
	if _, err := conn.Write(append(line, '\n')); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(conn)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r api.Response
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		if string(r.ID) == "7" {
			return r
		}
	}
	t.Fatalf("no answer: %v", sc.Err())
	return api.Response{}
}

// A registry that wants credentials (401 with a bearer challenge, and a
// token endpoint that refuses anonymous requests) reaches the client as
// unauthenticated with the registry's own message.
func TestPullUnauthenticatedRegistry(t *testing.T) {
	inner := testfixture.NewRegistry()
	open := httptest.NewServer(inner)
	defer open.Close()
	var host string
	gated := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" || r.Header.Get("Authorization") == "" {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="http://%s/token",service="banger-test"`, host))
			writeRegistryError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
			return
		}
		inner.ServeHTTP(w, r)
	}))
	defer gated.Close()
	host = strings.TrimPrefix(gated.URL, "http://")
	// The image is there; the gate is what refuses it.
	pushRandom(t, strings.TrimPrefix(open.URL, "http://"), "private/image", "1")
	ref := host + "/private/image:1"

	d, c := startDaemonWith(t, func(*Config) {})
	err := c.Call(context.Background(), api.MethodImagePull, api.ImagePullParams{Ref: ref}, nil)
	if got := api.KindOf(err); got != api.KindUnauthenticated {
		t.Fatalf("pull from a 401 registry: kind %q, want unauthenticated: %v", got, err)
	}
	if !strings.Contains(err.Error(), "authentication required") || !strings.Contains(err.Error(), "UNAUTHORIZED") {
		t.Fatalf("the registry's message is missing: %v", err)
	}
	if !strings.Contains(err.Error(), ref) {
		t.Fatalf("the error does not name the ref: %v", err)
	}
	// The JSON-RPC code and data.kind on the wire, as an SDK sees them.
	resp := pullRaw(t, d.cfg.Socket, ref)
	if resp.Error == nil || resp.Error.Code != api.CodeFor(api.KindUnauthenticated) || resp.Error.Data == nil || resp.Error.Data.Kind != api.KindUnauthenticated {
		t.Fatalf("wire error: %+v", resp.Error)
	}
	if api.CodeFor(api.KindUnauthenticated) == api.CodeFor(api.KindUnavailable) {
		t.Fatal("unauthenticated shares unavailable's code")
	}
	if imgs, _ := d.store.ListImages(context.Background()); len(imgs) != 1 { // only the seeded "img"
		t.Fatalf("a refused pull recorded an image: %v", imgs)
	}
}

// A manifest the registry does not have (unknown tag of a known
// repository, or an unknown repository) is not_found.
func TestPullMissingManifestIsNotFound(t *testing.T) {
	reg := testfixture.NewRegistry()
	srv := httptest.NewServer(reg)
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	pushRandom(t, host, "present/image", "1")
	_, c := startDaemonWith(t, func(*Config) {})
	for _, ref := range []string{host + "/present/image:2", host + "/absent/image:1"} {
		err := c.Call(context.Background(), api.MethodImagePull, api.ImagePullParams{Ref: ref}, nil)
		if got := api.KindOf(err); got != api.KindNotFound {
			t.Fatalf("pull %s: kind %q, want not_found: %v", ref, got, err)
		}
		if !strings.Contains(err.Error(), "_UNKNOWN") {
			t.Fatalf("pull %s: the registry's code is missing: %v", ref, err)
		}
	}
	if got := reg.ManifestGets("present/image"); got == 0 {
		t.Fatal("the registry saw no manifest GET")
	}
}

// Cancelling (or timing out) the caller's context while the daemon is
// downloading a layer from a slow registry gives the caller canceled
// (deadline_exceeded), still errors.Is the context error.
func TestPullCancelledByCaller(t *testing.T) {
	inner := testfixture.NewRegistry()
	open := httptest.NewServer(inner)
	defer open.Close()
	_, img := pushRandom(t, strings.TrimPrefix(open.URL, "http://"), "slow/image", "1")
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	layer, err := layers[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	hit := make(chan struct{}, 8)
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/"+layer.String()) {
			select {
			case hit <- struct{}{}:
			default:
			}
			select {
			case <-r.Context().Done():
			case <-release:
				// Let the daemon's pull (which outlives its caller) fail fast.
				writeRegistryError(w, http.StatusNotFound, "BLOB_UNKNOWN", "released")
			}
			return
		}
		inner.ServeHTTP(w, r)
	}))
	defer slow.Close()
	ref := strings.TrimPrefix(slow.URL, "http://") + "/slow/image:1"
	_, c := startDaemonWith(t, func(*Config) {})
	t.Cleanup(func() { close(release) }) // runs before the daemon stops

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var cancelledAt time.Time
	go func() {
		select {
		case <-hit:
		case <-time.After(30 * time.Second):
		}
		cancelledAt = time.Now()
		cancel()
	}()
	err = c.Call(ctx, api.MethodImagePull, api.ImagePullParams{Ref: ref}, nil)
	if got := api.KindOf(err); got != api.KindCanceled {
		t.Fatalf("cancelled pull: kind %q, want canceled: %v", got, err)
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled pull is not errors.Is context.Canceled: %v", err)
	}
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Kind != api.KindCanceled {
		t.Fatalf("not an *api.Error of kind canceled: %#v", err)
	}
	if cancelledAt.IsZero() {
		t.Fatal("the call returned before the layer download started")
	}
	if d := time.Since(cancelledAt); d > 5*time.Second {
		t.Fatalf("the call took %s to notice the cancel", d)
	}

	// Same with a deadline (another name, so it does not wait on the first
	// pull's lock).
	dctx, dcancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer dcancel()
	err = c.Call(dctx, api.MethodImagePull, api.ImagePullParams{Ref: ref, Name: "slow-again"}, nil)
	if got := api.KindOf(err); got != api.KindDeadlineExceeded || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("timed-out pull: kind %q: %v", got, err)
	}
}

// The op log's fail line carries the wire kind and the cause chain.
func TestOpFailLogsKindAndChain(t *testing.T) {
	var buf bytes.Buffer
	op := &operation{ctx: context.Background(), log: slog.New(slog.NewTextHandler(&buf, nil)), start: time.Now()}
	cause := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	err := op.fail(api.Errorf(api.KindInternal, "pull image %q: %w", "x", fmt.Errorf("fetch: %w", cause)))
	line := buf.String()
	for _, want := range []string{"kind=unavailable", `chain="*api.Error(internal) > *fmt.wrapError > *net.OpError > *errors.errorString"`} {
		if !strings.Contains(line, want) {
			t.Fatalf("fail line %q lacks %s", line, want)
		}
	}
	if !errors.Is(err, cause) {
		t.Fatal("fail changed the error")
	}
}
