package agent

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// The client against the real banger-init server is tested in
// cmd/banger-init (sshd_test.go on the host, vm_test.go in a QEMU guest).

func key(t *testing.T) ssh.Signer {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestTOFU(t *testing.T) {
	path := filepath.Join(t.TempDir(), "known_hosts")
	a, b := key(t).PublicKey(), key(t).PublicKey()
	cb := TOFU(path, "vm1", "172.16.0.2")
	if err := cb("x", nil, a); err != nil {
		t.Fatalf("first use: %v", err)
	}
	data, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(data), "vm1,172.16.0.2 ssh-ed25519 ") {
		t.Errorf("known_hosts = %q: want a line the system ssh can read", data)
	}
	// A fresh callback (daemon restart) still trusts the recorded key...
	if err := TOFU(path)("x", nil, a); err != nil {
		t.Fatalf("recorded key refused: %v", err)
	}
	// ...and refuses another.
	err := TOFU(path)("x", nil, b)
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("changed key: %v", err)
	}
	if after, _ := os.ReadFile(path); string(after) != string(data) {
		t.Error("refused key was recorded")
	}
	if err := TOFU(filepath.Join(t.TempDir(), "missing-dir", "kh"))("x", nil, a); err == nil {
		t.Error("unwritable known_hosts: want error")
	}
}

func socketPair(t *testing.T) (net.Conn, net.Conn) {
	l, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("unix", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

func TestDialSilentPeer(t *testing.T) {
	// A guest that never answers (still booting, or hung) must not block
	// Dial past its context.
	c, _ := socketPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := Dial(ctx, c, key(t), TOFU(filepath.Join(t.TempDir(), "kh")))
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "did not answer") {
		t.Fatalf("got %v, want deadline exceeded, guest did not answer", err)
	}

	c2, _ := socketPair(t)
	ctx2, cancel2 := context.WithCancel(context.Background())
	go func() { time.Sleep(50 * time.Millisecond); cancel2() }()
	_, err = Dial(ctx2, c2, key(t), TOFU(filepath.Join(t.TempDir(), "kh")))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want canceled", err)
	}
}

func TestDialNeedsHostKeyCallback(t *testing.T) {
	c, _ := socketPair(t)
	if _, err := Dial(context.Background(), c, key(t), nil); err == nil || !strings.Contains(err.Error(), "TOFU") {
		t.Fatalf("got %v", err)
	}
}
