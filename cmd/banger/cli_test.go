package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	_ "modernc.org/sqlite"

	"banger/internal/model"
	"banger/internal/testenv"
	"banger/internal/testfixture"
)

var bangerBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "banger-cli-test")
	if err != nil {
		panic(err)
	}
	bangerBin = filepath.Join(dir, "banger")
	// Go's build cache defaults to $XDG_CACHE_HOME/go-build: keep the
	// user's, or every run rebuilds banger and its dependencies from
	// nothing (15 minutes on a loaded 2-core host).
	if os.Getenv("GOCACHE") == "" {
		if out, err := exec.Command("go", "env", "GOCACHE").Output(); err == nil {
			os.Setenv("GOCACHE", strings.TrimSpace(string(out)))
		}
	}
	// The CLI keeps its user key and known hosts under these: the tests'
	// own, not the developer's home.
	os.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	os.Setenv("XDG_CACHE_HOME", filepath.Join(dir, "cache"))
	out, err := exec.Command("go", "build", "-o", bangerBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build banger: %v\n%s", err, out)
		os.Exit(1)
	}
	// banger finds banger-init next to itself; it must be static.
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "banger-init"), "../banger-init")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build banger-init: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if kernelCache.root != "" {
		os.RemoveAll(kernelCache.root)
	}
	if microVMKernel.root != "" {
		os.RemoveAll(microVMKernel.root)
	}
	os.Exit(code)
}

type daemonProc struct {
	cmd      *exec.Cmd
	stateDir string
	socket   string
	log      *syncBuffer
}

// syncBuffer is a bytes.Buffer safe for the daemon's writes and our reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func startDaemonProc(t *testing.T, stateDir, runDir string) *daemonProc {
	t.Helper()
	return startDaemonProcArgs(t, stateDir, runDir)
}

// startDaemonProcArgs starts `banger daemon`; "--netns NS" as the first
// extra args runs it inside that network namespace.
func startDaemonProcArgs(t *testing.T, stateDir, runDir string, extra ...string) *daemonProc {
	t.Helper()
	d := &daemonProc{stateDir: stateDir, socket: filepath.Join(runDir, "banger.sock"), log: &syncBuffer{}}
	args := []string{"daemon", "--state-dir", stateDir, "--runtime-dir", runDir, "--default-image", "busybox", "--ready-timeout", "90s"}
	if len(extra) >= 2 && extra[0] == "--netns" {
		d.cmd = exec.Command("ip", append(append([]string{"netns", "exec", extra[1], bangerBin}, args...), extra[2:]...)...)
	} else {
		d.cmd = exec.Command(bangerBin, append(append(args, "--bridge-ip", "10.201.0.1/24"), extra...)...)
	}
	d.cmd.Stderr = d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.cmd.Process.Kill(); d.cmd.Wait() })
	for i := 0; i < 200; i++ {
		if _, _, err := d.run("version"); err == nil {
			if out, _, _ := d.run("version"); strings.Contains(out, "daemon") {
				return d
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("daemon did not start: %s", d.log)
	return nil
}

// seedFake imports a tiny fake kernel and the busybox image (as "busybox",
// the daemons' default image) so reservation-only creates pull nothing.
func seedFake(t *testing.T, d *daemonProc) {
	t.Helper()
	dir := t.TempDir()
	k := filepath.Join(dir, "vmlinux")
	body := append([]byte("\x7fELF\x02\x01\x01\x00"), make([]byte, 56)...)
	body = append(body, []byte("Linux version 6.1.0-fake (test@banger) #1 SMP\x00")...)
	os.WriteFile(k, body, 0o644)
	if _, stderr, err := d.run("kernel", "import", "--name", "fake", "--kernel", k); err != nil {
		t.Fatalf("kernel import: %v %s", err, stderr)
	}
	img, err := testfixture.BusyboxImage("cli")
	if err != nil {
		testenv.Skip(t, "busybox fixture image: %v", err)
	}
	if err := testfixture.WriteLayout(filepath.Join(dir, "bb"), img); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := d.run("image", "import", filepath.Join(dir, "bb"), "--name", "busybox", "--kernel", "fake"); err != nil {
		t.Fatalf("image import: %v %s", err, stderr)
	}
}

func (d *daemonProc) run(args ...string) (string, string, error) {
	cmd := exec.Command(bangerBin, append([]string{"--socket", d.socket}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

func TestCLIUnreachable(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "nope.sock")
	cmd := exec.Command(bangerBin, "--socket", sock, "vm", "ls")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "cannot reach banger daemon at "+sock+": is `banger daemon` running?") {
		t.Fatalf("got %v: %s", err, out)
	}
	// BANGER_SOCKET is honoured too.
	cmd = exec.Command(bangerBin, "vm", "ls")
	cmd.Env = append(os.Environ(), "BANGER_SOCKET="+sock)
	out, _ = cmd.CombinedOutput()
	if !strings.Contains(string(out), sock) {
		t.Fatalf("BANGER_SOCKET ignored: %s", out)
	}
}

// TestCLIParallelCreates drives 200 CLI processes (4 per name) at one daemon.
func TestCLIParallelCreates(t *testing.T) {
	dir := t.TempDir()
	d := startDaemonProc(t, filepath.Join(dir, "state"), filepath.Join(dir, "run"))
	seedFake(t, d)
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, exists := 0, 0
	sem := make(chan struct{}, 200) // all 200 CLI processes at once
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			_, stderr, err := d.run("vm", "create", "--no-start", "--name", fmt.Sprintf("p-%d", i%50), "--image", "busybox")
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case strings.Contains(stderr, "already exists"):
				exists++
			default:
				t.Errorf("create %d: %v %s", i, err, stderr)
			}
		}(i)
	}
	wg.Wait()
	if ok != 50 || exists != 150 {
		t.Fatalf("ok=%d exists=%d", ok, exists)
	}
	out, _, err := d.run("vm", "ls", "-a", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var vms []map[string]any
	if err := json.Unmarshal([]byte(out), &vms); err != nil {
		t.Fatal(err)
	}
	ips := map[any]bool{}
	for _, v := range vms {
		for _, k := range []string{"id", "name", "state", "image", "guest_ip", "vcpu", "memory_mib", "created_at"} {
			if _, ok := v[k]; !ok {
				t.Fatalf("vm ls -o json lacks %q: %v", k, v)
			}
		}
		ips[v["guest_ip"]] = true
	}
	if len(vms) != 50 || len(ips) != 50 {
		t.Fatalf("%d vms, %d distinct ips", len(vms), len(ips))
	}
}

// TestSIGKILLDuringLoad kills the daemon mid-load and checks the store.
func TestSIGKILLDuringLoad(t *testing.T) {
	dir := t.TempDir()
	state, run := filepath.Join(dir, "state"), filepath.Join(dir, "run")
	d := startDaemonProc(t, state, run)
	seedFake(t, d)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ctx.Err() == nil && i < 100; i++ {
				d.run("vm", "create", "--no-start", "--name", fmt.Sprintf("k-%d", (w*100+i)%60))
			}
		}(w)
	}
	time.Sleep(1500 * time.Millisecond)
	d.cmd.Process.Signal(syscall.SIGKILL)
	d.cmd.Wait()
	cancel()
	wg.Wait()

	d2 := startDaemonProc(t, state, run)
	out, stderr, err := d2.run("vm", "ls", "-a", "-o", "json")
	if err != nil {
		t.Fatalf("ls after restart: %v %s", err, stderr)
	}
	var vms []map[string]any
	if err := json.Unmarshal([]byte(out), &vms); err != nil {
		t.Fatal(err)
	}
	if len(vms) == 0 {
		t.Fatal("no VMs were created before the kill; the test proved nothing")
	}
	names, ips := map[string]bool{}, map[string]bool{}
	for _, v := range vms {
		n, ip := v["name"].(string), v["guest_ip"].(string)
		if names[n] || ips[ip] {
			t.Fatalf("duplicate name or ip: %s %s", n, ip)
		}
		names[n], ips[ip] = true, true
		if err := model.ValidateVMName(n); err != nil || !model.ValidState(model.VMState(v["state"].(string))) {
			t.Fatalf("invalid row %v", v)
		}
	}
	d2.cmd.Process.Signal(syscall.SIGTERM)
	d2.cmd.Wait()
	db, err := sql.Open("sqlite", filepath.Join(state, "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var res string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&res); err != nil || res != "ok" {
		t.Fatalf("integrity: %q %v", res, err)
	}
	if _, err := os.Stat(d2.socket); !os.IsNotExist(err) {
		t.Fatalf("socket left after SIGTERM: %v", err)
	}
	t.Logf("%d VMs survived the kill", len(vms))
}

func TestCLIInvalidInput(t *testing.T) {
	dir := t.TempDir()
	d := startDaemonProc(t, filepath.Join(dir, "state"), filepath.Join(dir, "run"))
	seedFake(t, d)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"vm", "create", "--no-start", "--name", "Bad_Name"}, `invalid VM name "Bad_Name"`},
		{[]string{"vm", "create", "--no-start", "--work-disk-size", "-1G"}, `"-1G"`},
		{[]string{"vm", "inspect", "ghost"}, `VM "ghost" not found`},
		{[]string{"vm", "ls", "-o", "xml"}, `invalid output format "xml": use table, json or yaml`},
		{[]string{"vm", "create", "--no-start", "--init", "systemd"}, `init mode "systemd"`},
		{[]string{"vm", "create", "--no-start", "--restart", "sometimes"}, `restart policy "sometimes"`},
		{[]string{"vm", "create", "--no-start", "-e", "1X=y"}, `"1X"`},
		{[]string{"vm", "create", "--no-start", "-w", "rel"}, `working directory "rel"`},
		{[]string{"vm", "create", "--no-start", "--env-file", "/nonexistent/env"}, `--env-file`},
		{[]string{"vm", "exec", "x", "-u", "a b", "--", "true"}, `user "a b"`},
	} {
		_, stderr, err := d.run(tc.args...)
		if err == nil || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: err=%v stderr=%q, want %q", tc.args, err, stderr, tc.want)
		}
	}
	if _, _, err := d.run("vm", "ls"); err != nil {
		t.Fatal("daemon stopped answering")
	}
}

// TestKilledMidPull SIGKILLs the daemon while it pulls from a slow
// registry: after a restart no partial image is listed and no temp file is
// left in images/ or the layer cache.
func TestKilledMidPull(t *testing.T) {
	testenv.RequireTool(t, "mkfs.ext4")
	reg := testfixture.NewRegistry()
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			time.Sleep(3 * time.Second)
		}
		reg.ServeHTTP(w, r)
	})
	srv := httptest.NewServer(slow)
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	img, err := testfixture.BusyboxImage("kill")
	if err != nil {
		testenv.Skip(t, "busybox fixture image: %v", err)
	}
	ref := host + "/slow/busybox:1"
	// Push with the plain handler (the slow one would delay the push too).
	psrv := httptest.NewServer(reg)
	defer psrv.Close()
	pr, _ := name.ParseReference(strings.TrimPrefix(psrv.URL, "http://")+"/slow/busybox:1", name.Insecure)
	if err := remote.Write(pr, img); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	state, run := filepath.Join(dir, "state"), filepath.Join(dir, "run")
	d := startDaemonProc(t, state, run)
	pull := exec.Command(bangerBin, "--socket", d.socket, "image", "pull", ref)
	pull.Start()
	time.Sleep(1500 * time.Millisecond)
	d.cmd.Process.Signal(syscall.SIGKILL)
	d.cmd.Wait()
	pull.Wait()
	d2 := startDaemonProc(t, state, run)
	out, _, err := d2.run("image", "ls", "-o", "json")
	if err != nil || strings.TrimSpace(out) != "[]" {
		t.Fatalf("after kill mid-pull: %q %v", out, err)
	}
	filepath.Walk(filepath.Join(state, "images"), func(p string, info os.FileInfo, err error) error {
		if err == nil && p != filepath.Join(state, "images") {
			t.Errorf("left in images/: %s", p)
		}
		return nil
	})
	filepath.Walk(filepath.Join(state, "cache"), func(p string, info os.FileInfo, err error) error {
		if err == nil && strings.HasSuffix(p, ".tmp") {
			t.Errorf("temp file left in cache: %s", p)
		}
		return nil
	})
}

// TestCLIParallelKernelPull runs 8 `banger kernel pull` processes for one
// catalog kernel served slowly over loopback: one fetch, one success, seven
// "already pulled", never a parse error.
func TestCLIParallelKernelPull(t *testing.T) {
	body := append([]byte("\x7fELF\x02\x01\x01\x00"), make([]byte, 56)...)
	body = append(body, []byte("Linux version 6.1.0-par (test@banger) #1 SMP\x00")...)
	body = append(body, bytes.Repeat([]byte("k"), 1<<20)...)
	var gets atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gets.Add(1)
		for i := 0; i < len(body); i += len(body) / 8 {
			w.Write(body[i:min(i+len(body)/8, len(body))])
			w.(http.Flusher).Flush()
			time.Sleep(100 * time.Millisecond)
		}
	}))
	defer srv.Close()
	sum := sha256.Sum256(body)
	dir := t.TempDir()
	cat := filepath.Join(dir, "kernels.json")
	os.WriteFile(cat, []byte(fmt.Sprintf(`{"kernels":[{"name":"k1","description":"test","source":{"type":"url","url":%q,"sha256":%q}}]}`, srv.URL+"/vmlinux", hex.EncodeToString(sum[:]))), 0o644)
	d := startDaemonProcArgs(t, filepath.Join(dir, "state"), filepath.Join(dir, "run"), "--kernel-catalog", cat)
	var wg sync.WaitGroup
	var ok, already atomic.Int32
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, stderr, err := d.run("kernel", "pull", "k1")
			switch {
			case err == nil:
				ok.Add(1)
			case strings.Contains(stderr, "already pulled"):
				already.Add(1)
			default:
				t.Errorf("kernel pull: %v %s", err, stderr)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 1 || already.Load() != 7 || gets.Load() != 1 {
		t.Fatalf("ok=%d already=%d GETs=%d; want 1, 7, 1", ok.Load(), already.Load(), gets.Load())
	}
	out, _, _ := d.run("kernel", "ls", "-o", "json")
	if !strings.Contains(out, `"release": "6.1.0-par"`) {
		t.Fatalf("kernel ls: %s", out)
	}
	_, stderr, err := d.run("kernel", "pull", "nosuch")
	if err == nil || !strings.Contains(stderr, "k1") || !strings.Contains(stderr, "debian-cloud-amd64") {
		t.Fatalf("unknown kernel should list the catalog: %v %s", err, stderr)
	}
}

// TestCLIRunInterruptedDuringPull sends SIGINT to `vm run --rm` while its
// create auto-pulls the image from a slow registry: nothing was reserved,
// so it says so, exits 130, and no VM is listed.
func TestCLIRunInterruptedDuringPull(t *testing.T) {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("e2fsprogs not installed")
	}
	reg := testfixture.NewRegistry()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			select {
			case <-time.After(20 * time.Second):
			case <-r.Context().Done(): // the daemon cancelled the pull
				return
			}
		}
		reg.ServeHTTP(w, r)
	}))
	defer srv.Close()
	img, err := testfixture.BusyboxImage("intr")
	if err != nil {
		t.Skip(err)
	}
	psrv := httptest.NewServer(reg)
	defer psrv.Close()
	pr, _ := name.ParseReference(strings.TrimPrefix(psrv.URL, "http://")+"/slow/busybox:1", name.Insecure)
	if err := remote.Write(pr, img); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	d := startDaemonProc(t, filepath.Join(dir, "state"), filepath.Join(dir, "run"))
	cmd := exec.Command(bangerBin, "--socket", d.socket, "vm", "run", "--rm", "--image", strings.TrimPrefix(srv.URL, "http://")+"/slow/busybox:1", "--", "true")
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for i := 0; !strings.Contains(stderr.String(), "auto_pull_image"); i++ {
		if i > 200 {
			cmd.Process.Kill()
			t.Fatalf("no auto_pull_image stage: %s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGINT)
	err = cmd.Wait()
	if exitCode(err) != 130 || !regexp.MustCompile(`interrupted: VM [a-z]+-[a-z]+-\d{4} was not created`).MatchString(stderr.String()) {
		t.Fatalf("exit %d, stderr:\n%s", exitCode(err), stderr.String())
	}
	if out, _, err := d.run("vm", "ls", "-a", "-o", "json"); err != nil || strings.TrimSpace(out) != "[]" {
		t.Fatalf("vm ls after the interrupted run: %q %v", out, err)
	}
}
