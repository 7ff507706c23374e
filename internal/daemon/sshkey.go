package daemon

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/crypto/ssh"

	"banger/internal/disk"
)

// sshKeys owns the daemon's key pair (ssh/id_ed25519), authorized in every
// guest through the work seed.
type sshKeys struct {
	dir    string
	mu     sync.RWMutex // guards signer and pub
	signer ssh.Signer
	pub    []byte // authorized_keys line
}

func (k *sshKeys) privPath() string { return filepath.Join(k.dir, "id_ed25519") }

// load reads the key pair, creating it at first start.
func (k *sshKeys) load() error {
	if err := os.MkdirAll(k.dir, 0o700); err != nil {
		return err
	}
	b, err := os.ReadFile(k.privPath())
	if os.IsNotExist(err) {
		return k.rotate()
	}
	if err != nil {
		return err
	}
	signer, err := ssh.ParsePrivateKey(b)
	if err != nil {
		return fmt.Errorf("parse %s: %w (move it away to generate a new key)", k.privPath(), err)
	}
	k.mu.Lock()
	k.signer, k.pub = signer, ssh.MarshalAuthorizedKey(signer.PublicKey())
	k.mu.Unlock()
	return nil
}

// rotate writes a new key pair (temp + rename, private key first) and
// switches to it.
func (k *sshKeys) rotate() error {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	block, err := ssh.MarshalPrivateKey(priv, "banger")
	if err != nil {
		return err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return err
	}
	pub := ssh.MarshalAuthorizedKey(signer.PublicKey())
	if err := disk.WriteFileAtomic(k.privPath(), pem.EncodeToMemory(block), 0o600); err != nil {
		return err
	}
	if err := disk.WriteFileAtomic(k.privPath()+".pub", pub, 0o644); err != nil {
		return err
	}
	k.mu.Lock()
	k.signer, k.pub = signer, pub
	k.mu.Unlock()
	return nil
}

func (k *sshKeys) current() (ssh.Signer, []byte) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.signer, append([]byte(nil), k.pub...) // callers may not share the array
}

func (k *sshKeys) fingerprint() string {
	s, _ := k.current()
	return ssh.FingerprintSHA256(s.PublicKey())
}
