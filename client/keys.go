package client

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

// Each user reaches their VMs with their own key: the client keeps one in
// the user's config dir (created on first use) and the daemon authorizes
// its public half in the caller's VMs. The daemon's own key stays with
// the daemon.

// DefaultKeyPath is the key guest sessions use unless WithSSHKey says
// otherwise: $XDG_CONFIG_HOME/banger/id_ed25519 (~/.config/banger/...).
func DefaultKeyPath() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("find your config dir for the banger SSH key: %w (set HOME or XDG_CONFIG_HOME)", err)
	}
	return filepath.Join(dir, "banger", "id_ed25519"), nil
}

// Access is what reaching a VM's SSH server as the caller takes: how
// (Info), the caller's key (authorized in the VM by the daemon) and its
// path, for the system ssh, and a known_hosts file of the caller's own
// holding the guest's host keys as the daemon knows them.
type Access struct {
	Info       api.SSHInfo
	Signer     ssh.Signer
	KeyPath    string
	KnownHosts string
}

// GuestAccess loads (or creates) the client's key, has the daemon
// authorize it in the VM name (vm.ssh_info) and writes the VM's host keys
// to the client's known_hosts dir.
func (c *Client) GuestAccess(ctx context.Context, name string) (*Access, error) {
	path := c.keyPath
	if path == "" {
		var err error
		if path, err = DefaultKeyPath(); err != nil {
			return nil, err
		}
	}
	signer, err := loadKey(path)
	if err != nil {
		return nil, err
	}
	pub := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	info, err := c.SSHInfo(ctx, api.SSHInfoParams{Name: name, PublicKey: pub})
	if err != nil {
		return nil, err
	}
	kh, err := c.knownHosts(info)
	if err != nil {
		return nil, err
	}
	return &Access{Info: info, Signer: signer, KeyPath: path, KnownHosts: kh}, nil
}

// loadKey loads the key at path, creating it (0600, in a 0700 dir) if
// absent.
func loadKey(path string) (ssh.Signer, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		b, err = createKey(path)
	}
	if err != nil {
		return nil, fmt.Errorf("your banger SSH key %s: %w", path, err)
	}
	signer, err := ssh.ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("parse your banger SSH key %s: %w (move it away and a new one is made)", path, err)
	}
	return signer, nil
}

func createKey(path string) ([]byte, error) {
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
	// Written beside, then linked into place: two clients creating the
	// key at once end with one key, never a torn file.
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

// knownHosts writes the VM's host keys (as the daemon recorded them) to a
// file in the known_hosts dir and returns its path.
func (c *Client) knownHosts(info api.SSHInfo) (string, error) {
	dir := c.cache
	if dir == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			return "", fmt.Errorf("find your cache dir for known hosts: %w (set HOME or XDG_CACHE_HOME)", err)
		}
		dir = filepath.Join(cache, "banger", "known_hosts")
	}
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
