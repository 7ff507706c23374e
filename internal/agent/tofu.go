package agent

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// tofuMu serializes first-use writes of known_hosts files in this process.
var tofuMu sync.Mutex

// TOFU returns a host key callback for one VM's known_hosts file: the first
// key seen is recorded (trust on first use) under names (e.g. the VM's name,
// IP and "<name>.vm", so the system ssh can use the same file); afterwards
// only a key already in the file is accepted. banger-init keeps its host key
// in system.cow, so it changes only when the VM is recreated.
func TOFU(path string, names ...string) ssh.HostKeyCallback {
	return func(_ string, _ net.Addr, key ssh.PublicKey) error {
		tofuMu.Lock()
		defer tofuMu.Unlock()
		data, err := os.ReadFile(path)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("read known hosts: %w", err)
		}
		known := 0
		for rest := data; len(rest) > 0; {
			_, _, k, _, r, err := ssh.ParseKnownHosts(rest)
			if err != nil {
				break
			}
			known++
			if bytes.Equal(k.Marshal(), key.Marshal()) {
				return nil
			}
			rest = r
		}
		if known > 0 {
			return fmt.Errorf("guest host key %s does not match %s: the VM was recreated or its system.cow replaced; remove %s if that is expected",
				ssh.FingerprintSHA256(key), path, path)
		}
		if len(names) == 0 {
			names = []string{"banger-agent"}
		}
		line := knownhosts.Line(names, key) + "\n"
		return writeFileAtomic(path, append(data, line...), 0o600)
	}
}

func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("record host key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err == nil {
		err = tmp.Chmod(perm)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("record host key in %s: %w", path, err)
	}
	return nil
}
