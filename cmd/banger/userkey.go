package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"

	"banger/api"
)

// Each user reaches their VMs with their own key: the CLI keeps one in the
// user's config dir (created on first use) and the daemon authorizes its
// public half in the caller's VMs. The daemon's own key stays with the
// daemon.

// userKeyPath is the CLI's private key: $XDG_CONFIG_HOME/banger/id_ed25519
// (~/.config/banger/id_ed25519).
func userKeyPath() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("find your config dir for the banger SSH key: %w (set HOME or XDG_CONFIG_HOME)", err)
	}
	return filepath.Join(dir, "banger", "id_ed25519"), nil
}

// userKey loads the CLI's key, creating it (0600, in a 0700 dir) if absent.
func userKey() (ssh.Signer, string, error) {
	path, err := userKeyPath()
	if err != nil {
		return nil, "", err
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		b, err = createUserKey(path)
	}
	if err != nil {
		return nil, "", fmt.Errorf("your banger SSH key %s: %w", path, err)
	}
	signer, err := ssh.ParsePrivateKey(b)
	if err != nil {
		return nil, "", fmt.Errorf("parse your banger SSH key %s: %w (move it away and a new one is made)", path, err)
	}
	return signer, path, nil
}

func createUserKey(path string) ([]byte, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	block, err := ssh.MarshalPrivateKey(priv, "banger@"+host)
	if err != nil {
		return nil, err
	}
	b := pem.EncodeToMemory(block)
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, err
	}
	// Written beside, then linked into place: two CLIs creating the key at
	// once end with one key, never a torn file.
	tmp, err := os.CreateTemp(filepath.Dir(path), ".id_ed25519-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	if err := os.Link(tmp.Name(), path); errors.Is(err, os.ErrExist) {
		return os.ReadFile(path)
	} else if err != nil {
		return nil, err
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))) + " banger@" + host + "\n"
	os.WriteFile(path+".pub", []byte(line), 0o644)
	return b, nil
}

// guestAccess is what a CLI command needs to reach a VM's SSH server as
// the caller: the caller's key (authorized in the VM by the daemon), its
// path (for the system ssh) and a known_hosts file of the caller's own
// holding the guest's host key as the daemon knows it.
type guestAccess struct {
	info       api.SSHInfo
	signer     ssh.Signer
	keyPath    string
	knownHosts string
}

func getGuestAccess(ctx context.Context, a *app, name string) (*guestAccess, error) {
	signer, keyPath, err := userKey()
	if err != nil {
		return nil, err
	}
	pub := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	var info api.SSHInfo
	if err := a.call(ctx, api.MethodVMSSHInfo, api.SSHInfoParams{Name: name, PublicKey: pub}, &info); err != nil {
		return nil, err
	}
	kh, err := userKnownHosts(info)
	if err != nil {
		return nil, err
	}
	return &guestAccess{info: info, signer: signer, keyPath: keyPath, knownHosts: kh}, nil
}

// userKnownHosts writes the VM's host keys (as the daemon recorded them)
// to a file in the user's cache dir and returns its path.
func userKnownHosts(info api.SSHInfo) (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("find your cache dir for known hosts: %w (set HOME or XDG_CACHE_HOME)", err)
	}
	dir = filepath.Join(dir, "banger", "known_hosts")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	path := filepath.Join(dir, info.Name)
	if info.HostKeys == "" {
		return path, nil // first contact: trust on first use, as the daemon does
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(info.HostKeys), 0o600); err != nil {
		return "", err
	}
	return path, os.Rename(tmp, path)
}
