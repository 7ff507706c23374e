package main

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"banger/internal/testenv"
)

// TestStartErrorNamesWorkdir: a user who cannot enter the working
// directory gets an error naming it (the kernel's EACCES names only the
// program).
func TestStartErrorNamesWorkdir(t *testing.T) {
	testenv.RequireRoot(t, "to start a process as another user")
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/true")
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	err := cmd.Start()
	if err == nil {
		cmd.Wait()
		t.Fatal("nobody entered a 0700 directory of root's")
	}
	if msg := startError(cmd, err); !strings.Contains(msg, "working directory "+dir) || !strings.Contains(msg, "permission denied") {
		t.Fatalf("startError: %s", msg)
	}
}
