package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/guestproto"
)

// TestServerExecSettings: the Setup's VM env applies to every session, a
// session's env overrides it, and BANGER_WORKDIR / BANGER_USER set the
// directory and the account (looked up in the server's passwd).
func TestServerExecSettings(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("switching users needs root")
	}
	ts := newTestServer(t)
	dir := filepath.Dir(ts.srv.passwd)
	os.WriteFile(ts.srv.passwd, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "group"), []byte("root:x:0:\nnogroup:x:65534:\n"), 0o644)
	c, err := ts.connect(t, ts.signer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Setup(context.Background(), guestproto.Setup{Env: []string{"IMG=image", "A=from-image"}}); err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	for _, tc := range []struct {
		cmd  string
		env  map[string]string
		out  string
		code int
	}{
		{cmd: `echo "$IMG $A"`, out: "image from-image"},
		{cmd: `echo "$IMG $A"`, env: map[string]string{"A": "1"}, out: "image 1"},
		{cmd: "pwd", env: map[string]string{guestproto.EnvWorkdir: work}, out: work},
		{cmd: `id -u; id -g; echo "$HOME $USER"`, env: map[string]string{guestproto.EnvUser: "nobody"}, out: "65534\n65534\n/nonexistent nobody"},
		{cmd: "id -u", env: map[string]string{guestproto.EnvUser: "4242"}, out: "4242"},
		{cmd: "pwd", env: map[string]string{guestproto.EnvWorkdir: "/does/not/exist"}, code: 127},
		{cmd: "true", env: map[string]string{guestproto.EnvUser: "ghost"}, code: 127},
	} {
		out, errOut, code := exec1(t, c, tc.cmd, tc.env, nil)
		if strings.TrimSpace(out) != tc.out || code != tc.code {
			t.Errorf("%q %v: out %q (stderr %q) code %d; want %q %d", tc.cmd, tc.env, out, errOut, code, tc.out, tc.code)
		}
	}
	// Malformed env names and settings are refused by the server itself.
	for name, val := range map[string]string{"1BAD": "x", guestproto.EnvWorkdir: "relative", guestproto.EnvUser: "a b"} {
		s, err := c.SSH().NewSession()
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Setenv(name, val); err == nil {
			t.Errorf("env %s=%q accepted", name, val)
		}
		s.Close()
	}
}

// TestMainProcess: the Setup's main process runs with the VM env, its
// output goes to the console; restart policies; the final status is
// recorded and powers the guest off.
func TestMainProcess(t *testing.T) {
	ts := newTestServer(t)
	dir := t.TempDir()
	consolePath = filepath.Join(dir, "console")
	exitRecordPath = filepath.Join(dir, "cow", guestproto.MainExitPath)
	t.Cleanup(func() { consolePath, exitRecordPath = "/dev/console", filepath.Join(upperDir, guestproto.MainExitPath) })
	os.WriteFile(consolePath, nil, 0o644)
	c, err := ts.connect(t, ts.signer)
	if err != nil {
		t.Fatal(err)
	}
	counter := filepath.Join(dir, "runs")
	// on-failure: fails twice, then exits 0 -> powered off, status 0.
	script := `echo run >> ` + counter + `; echo "hello $GREETING from $(pwd)"; [ $(wc -l < ` + counter + `) -ge 3 ] && exit 0; exit 3`
	reply, err := c.Setup(context.Background(), guestproto.Setup{
		Env:  []string{"GREETING=hi"},
		Main: &guestproto.MainProcess{Argv: []string{"sh", "-c", script}, WorkingDir: dir, Restart: guestproto.RestartOnFailure},
	})
	if err != nil {
		t.Fatal(err)
	}
	if reply.Init != guestproto.InitBanger {
		t.Errorf("reply %+v", reply)
	}
	waitFor(t, func() bool { return ts.poweroff.Load() == 1 })
	b, _ := os.ReadFile(exitRecordPath)
	if code, err := guestproto.ParseExitRecord(b); err != nil || code != 0 {
		t.Errorf("exit record %q: %d %v", b, code, err)
	}
	console, _ := os.ReadFile(consolePath)
	if strings.Count(string(console), "hello hi from "+dir) != 3 {
		t.Errorf("console:\n%s", console)
	}
	// A second Setup in the same boot does not start another main process.
	if _, err := c.Setup(context.Background(), guestproto.Setup{Main: &guestproto.MainProcess{Argv: []string{"true"}}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if ts.poweroff.Load() != 1 {
		t.Error("a second Setup started the main process again")
	}
}

func TestMainProcessRestartNoAndRefusals(t *testing.T) {
	ts := newTestServer(t)
	dir := t.TempDir()
	consolePath = filepath.Join(dir, "console")
	exitRecordPath = filepath.Join(dir, "cow", guestproto.MainExitPath)
	t.Cleanup(func() { consolePath, exitRecordPath = "/dev/console", filepath.Join(upperDir, guestproto.MainExitPath) })
	c, err := ts.connect(t, ts.signer)
	if err != nil {
		t.Fatal(err)
	}
	// A command that does not exist, a user that does not exist: refused,
	// with the reason, and nothing runs.
	for _, m := range []guestproto.MainProcess{{Argv: []string{"no-such-binary"}}, {Argv: []string{"true"}, User: "ghost"}} {
		_, err := c.Setup(context.Background(), guestproto.Setup{Main: &m})
		if err == nil || !strings.Contains(err.Error(), "main process") {
			t.Errorf("%+v: %v", m, err)
		}
	}
	// Raw JSON the guest must refuse.
	ok, reply, err := c.SSH().SendRequest(guestproto.SetupRequest, true, []byte(`{"main":{"argv":[]}}`))
	if err != nil || ok || !strings.Contains(string(reply), "empty command") {
		t.Errorf("empty argv: %v %q %v", ok, reply, err)
	}
	b, _ := json.Marshal(guestproto.Setup{Main: &guestproto.MainProcess{Argv: []string{"sh", "-c", "exit 5"}}})
	if ok, _, err := c.SSH().SendRequest(guestproto.SetupRequest, true, b); !ok || err != nil {
		t.Fatalf("setup: %v %v", ok, err)
	}
	waitFor(t, func() bool { return ts.poweroff.Load() == 1 })
	rec, _ := os.ReadFile(exitRecordPath)
	if code, err := guestproto.ParseExitRecord(rec); err != nil || code != 5 {
		t.Errorf("exit record %q: %d %v", rec, code, err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
