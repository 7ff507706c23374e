package daemon

import (
	"bytes"
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

// keyPair is a generated key not yet in use.
type keyPair struct {
	signer ssh.Signer
	pub    []byte // authorized_keys line
	pem    []byte
}

func newKeyPair() (keyPair, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return keyPair{}, err
	}
	block, err := ssh.MarshalPrivateKey(priv, "banger")
	if err != nil {
		return keyPair{}, err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return keyPair{}, err
	}
	return keyPair{signer: signer, pub: ssh.MarshalAuthorizedKey(signer.PublicKey()), pem: pem.EncodeToMemory(block)}, nil
}

func (k *sshKeys) retiredPath() string { return filepath.Join(k.dir, "retired_keys") }

// retired returns the daemon's earlier public keys (one per rotation).
func (k *sshKeys) retired() [][]byte {
	b, _ := os.ReadFile(k.retiredPath())
	var out [][]byte
	for _, l := range bytes.Split(b, []byte("\n")) {
		if len(bytes.TrimSpace(l)) > 0 {
			out = append(out, l)
		}
	}
	return out
}

// install writes kp (temp + rename, private key first), records the key it
// replaces in retired_keys (work disks drop it at their next start), and
// switches to kp.
func (k *sshKeys) install(kp keyPair) error {
	if _, old := k.current(); len(old) > 0 {
		prev, _ := os.ReadFile(k.retiredPath())
		if err := disk.WriteFileAtomic(k.retiredPath(), append(prev, old...), 0o644); err != nil {
			return err
		}
	}
	if err := disk.WriteFileAtomic(k.privPath(), kp.pem, 0o600); err != nil {
		return err
	}
	if err := disk.WriteFileAtomic(k.privPath()+".pub", kp.pub, 0o644); err != nil {
		return err
	}
	k.mu.Lock()
	k.signer, k.pub = kp.signer, kp.pub
	k.mu.Unlock()
	return nil
}

// rotate makes and installs a new key pair.
func (k *sshKeys) rotate() error {
	kp, err := newKeyPair()
	if err != nil {
		return err
	}
	return k.install(kp)
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
