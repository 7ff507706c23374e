package client_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/api"
	"banger/client"
	"banger/internal/testenv/vmhost"
)

// TestSDKLifecycle drives a real VM through the public SDK only (banger/
// client and banger/api; vmhost just starts the daemon): create with
// progress, exec with stdin and an exit code, copy a file in, follow the
// console log, remove.
func TestSDKLifecycle(t *testing.T) {
	d := vmhost.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	keys := t.TempDir()
	c, err := client.Connect(ctx, d.Socket,
		client.WithSSHKey(filepath.Join(keys, "id_ed25519")), client.WithKnownHostsDir(filepath.Join(keys, "known_hosts")))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := lifecycle(ctx, c, "sdk", &out); err != nil {
		t.Fatalf("%v\nsaw:\n%s\ndaemon log:\n%s", err, out.String(), tailLines(d.Log(), 30))
	}
	got := out.String()
	t.Logf("lifecycle:\n%s", got)
	for _, want := range []string{
		"progress: wait_ready",
		"created sdk state=running",
		`exec: exit=7 stdout="5" stderr="oops"`,
		"logs: main process started",
		`copied: "hello from the sdk"`,
		"logs: main process saw the copy",
		"removed sdk",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("lifecycle output lacks %q", want)
		}
	}
	if _, err := c.InspectVM(ctx, "sdk"); !api.IsKind(err, api.KindNotFound) {
		t.Errorf("after remove, InspectVM: %v, want not_found", err)
	}
	// The private key the SDK made is the caller's, mode 0600.
	if fi, err := os.Stat(filepath.Join(keys, "id_ed25519")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("SDK key: %v %v", fi, err)
	}
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
