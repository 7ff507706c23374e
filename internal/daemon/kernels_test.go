package daemon

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"banger/api"
	"banger/internal/kernelcat"
)

// kernelBundle is a tar.gz with an ELF-looking vmlinux carrying a Linux
// banner: enough for kernelcat's format and release detection.
func kernelBundle(t *testing.T, release string) []byte {
	t.Helper()
	body := append([]byte("\x7fELF\x02\x01\x01\x00"), make([]byte, 56)...)
	body = append(body, []byte("Linux version "+release+" (test@banger) #1 SMP\x00")...)
	body = append(body, bytes.Repeat([]byte("kernel"), 50000)...)
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	tw.WriteHeader(&tar.Header{Name: "vmlinux", Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
	tw.Write(body)
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

// slowKernelServer serves bundles slowly and counts GETs per path.
type slowKernelServer struct {
	*httptest.Server
	gets    sync.Map // path -> *atomic.Int32
	active  atomic.Int32
	overlap atomic.Bool
	bundles map[string][]byte
	delay   time.Duration
}

func newSlowKernelServer(t *testing.T, bundles map[string][]byte, delay time.Duration) *slowKernelServer {
	s := &slowKernelServer{bundles: bundles, delay: delay}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := s.gets.LoadOrStore(r.URL.Path, new(atomic.Int32))
		n.(*atomic.Int32).Add(1)
		if s.active.Add(1) > 1 {
			s.overlap.Store(true)
		}
		defer s.active.Add(-1)
		b, ok := s.bundles[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		// Trickle the body so concurrent callers really wait on one pull.
		chunk := len(b) / 10
		for i := 0; i < len(b); i += chunk {
			end := min(i+chunk, len(b))
			w.Write(b[i:end])
			w.(http.Flusher).Flush()
			time.Sleep(s.delay / 10)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *slowKernelServer) count(path string) int32 {
	n, ok := s.gets.Load(path)
	if !ok {
		return 0
	}
	return n.(*atomic.Int32).Load()
}

func writeKernelCatalog(t *testing.T, srv string, bundles map[string][]byte) string {
	t.Helper()
	var entries []string
	for path, b := range bundles {
		sum := sha256.Sum256(b)
		name := filepath.Base(path)[:len(filepath.Base(path))-len(".tar.gz")]
		entries = append(entries, fmt.Sprintf(`{"name":%q,"description":"test","source":{"type":"url","url":%q,"sha256":%q}}`, name, srv+path, hex.EncodeToString(sum[:])))
	}
	js := `{"kernels":[` + join(entries, ",") + `]}`
	p := filepath.Join(t.TempDir(), "kernels.json")
	if err := os.WriteFile(p, []byte(js), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func join(xs []string, sep string) string {
	var b bytes.Buffer
	for i, x := range xs {
		if i > 0 {
			b.WriteString(sep)
		}
		b.WriteString(x)
	}
	return b.String()
}

func startDaemonWith(t *testing.T, mut func(*Config)) (*Daemon, *api.Client) {
	t.Helper()
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.RuntimeDir = filepath.Join(dir, "run")
	cfg.BridgeIP = "10.200.0.1/24"
	mut(&cfg)
	d, err := New(context.Background(), cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	c := api.NewClient(d.cfg.Socket)
	for i := 0; i < 100; i++ {
		if c.Call(context.Background(), api.MethodPing, nil, nil) == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	seedLocal(t, d)
	return d, c
}

func TestKernelAutoPullOnce(t *testing.T) {
	bundles := map[string][]byte{"/k1.tar.gz": kernelBundle(t, "6.1.0-k1"), "/k2.tar.gz": kernelBundle(t, "6.1.0-k2")}
	srv := newSlowKernelServer(t, bundles, 600*time.Millisecond)
	catalog := writeKernelCatalog(t, srv.URL, bundles)
	d, _ := startDaemonWith(t, func(c *Config) { c.KernelCatalog = catalog })

	// A reader in a tight loop must never see a partial manifest.
	stop := make(chan struct{})
	var readerErr atomic.Value
	var reads atomic.Int64
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			m, err := kernelcat.ReadLocal(d.kernels.dir, "k1")
			if err == nil {
				reads.Add(1)
				if m.Name != "k1" || m.Release != "6.1.0-k1" || len(m.Files) == 0 {
					readerErr.Store(fmt.Errorf("bad manifest %+v", m))
				}
			} else if !os.IsNotExist(err) && !isNotExist(err) {
				readerErr.Store(err)
			}
		}
	}()

	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := d.kernels.readOrAutoPullKernel(context.Background(), "k1")
			if err == nil && m.Release != "6.1.0-k1" {
				err = fmt.Errorf("release %q", m.Release)
			}
			errs <- err
		}()
	}
	// A different kernel pulls in parallel with k1's.
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, err := d.kernels.readOrAutoPullKernel(context.Background(), "k2")
		errs <- err
	}()
	wg.Wait()
	time.Sleep(100 * time.Millisecond) // let the reader see the published manifest too
	close(stop)
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if v := readerErr.Load(); v != nil {
		t.Fatalf("reader saw: %v", v)
	}
	if n := srv.count("/k1.tar.gz"); n != 1 {
		t.Fatalf("k1 fetched %d times, want 1", n)
	}
	if !srv.overlap.Load() {
		t.Fatal("k1 and k2 pulls did not overlap")
	}
	if d.kernels.kernelPullLock.Len() != 0 {
		t.Fatalf("lock map kept %d entries", d.kernels.kernelPullLock.Len())
	}
	t.Logf("reader saw %d complete manifests", reads.Load())
}

func isNotExist(err error) bool {
	for e := err; e != nil; {
		if os.IsNotExist(e) {
			return true
		}
		u, ok := e.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		e = u.Unwrap()
	}
	return false
}

func TestKernelPullExplicit(t *testing.T) {
	bundles := map[string][]byte{"/k1.tar.gz": kernelBundle(t, "6.1.0-k1")}
	srv := newSlowKernelServer(t, bundles, 300*time.Millisecond)
	catalog := writeKernelCatalog(t, srv.URL, bundles)
	// A catalog entry whose checksum is wrong, and one that 404s.
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte(fmt.Sprintf(`{"kernels":[
	  {"name":"k1","source":{"type":"url","url":%q,"sha256":%q}},
	  {"name":"badsum","source":{"type":"url","url":%q,"sha256":"%064d"}},
	  {"name":"missing","source":{"type":"url","url":%q,"sha256":"%064d"}},
	  {"name":"closed","source":{"type":"url","url":"http://127.0.0.1:1/x.tar.gz","sha256":"%064d"}}]}`,
		srv.URL+"/k1.tar.gz", sha(bundles["/k1.tar.gz"]), srv.URL+"/k1.tar.gz", 0, srv.URL+"/nope.tar.gz", 0, 0)), 0o644)
	_ = catalog
	d, c := startDaemonWith(t, func(c *Config) { c.KernelCatalog = bad; c.DefaultImage = "img" })

	var wg sync.WaitGroup
	var ok, already atomic.Int32
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := c.Call(context.Background(), api.MethodKernelPull, api.NameParams{Name: "k1"}, nil)
			switch {
			case err == nil:
				ok.Add(1)
			case api.IsKind(err, api.KindAlreadyExists):
				already.Add(1)
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 1 || already.Load() != 7 || srv.count("/k1.tar.gz") != 1 {
		t.Fatalf("ok=%d already=%d gets=%d", ok.Load(), already.Load(), srv.count("/k1.tar.gz"))
	}
	before, _ := os.ReadDir(d.kernels.dir)
	for _, name := range []string{"badsum", "missing", "closed"} {
		err := c.Call(context.Background(), api.MethodKernelPull, api.NameParams{Name: name}, nil)
		if err == nil {
			t.Fatalf("%s: pull succeeded", name)
		}
		t.Logf("%s: %v", name, err)
	}
	after, _ := os.ReadDir(d.kernels.dir)
	if len(before) != len(after) {
		t.Fatalf("kernels/ changed: %v -> %v", before, after)
	}
	err := c.Call(context.Background(), api.MethodKernelPull, api.NameParams{Name: "nosuch"}, nil)
	if !api.IsKind(err, api.KindNotFound) || !bytes.Contains([]byte(err.Error()), []byte("k1")) {
		t.Fatalf("unknown kernel: %v", err)
	}
	// rm refuses while a VM uses the kernel.
	if err := c.Call(context.Background(), api.MethodVMCreate, api.VMCreateParams{Name: "user", Kernel: "k1", NoStart: true}, nil); err != nil {
		t.Fatal(err)
	}
	err = c.Call(context.Background(), api.MethodKernelDelete, api.NameParams{Name: "k1"}, nil)
	if !api.IsKind(err, api.KindConflict) || !bytes.Contains([]byte(err.Error()), []byte("user")) {
		t.Fatalf("rm in use: %v", err)
	}
	c.Call(context.Background(), api.MethodVMDelete, api.VMDeleteParams{Name: "user"}, nil)
	if err := c.Call(context.Background(), api.MethodKernelDelete, api.NameParams{Name: "k1"}, nil); err != nil {
		t.Fatal(err)
	}
	var ks []any
	c.Call(context.Background(), api.MethodKernelList, nil, &ks)
	if len(ks) != 1 { // testk from seedLocal remains
		t.Fatalf("after rm: %v", ks)
	}
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
