package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
)

// What a workload expects of a Linux machine beyond its disks and network,
// set up at every boot after the switch into the final root: mounts
// (devpts, /dev/shm, cgroup2 in mountRoot), world-writable temp dirs, a
// machine id of its own, a PATH (defaultPath, for banger-init and every
// process it starts), /etc/hosts (setHostname).

// machineIDPath is systemd's (and D-Bus's, journald's …) machine id.
const machineIDPath = "/etc/machine-id"

// setupBasics runs at every boot in the final root; nothing in it is
// fatal.
func setupBasics() {
	os.Setenv("PATH", defaultPath)
	for _, d := range []string{"/tmp", "/var/tmp"} {
		if err := ensureStickyDir(d); err != nil {
			logf("%v", err)
		}
	}
	if err := ensureMachineID("", filepath.Join(upperDir, "upper")); err != nil {
		logf("machine id: %v", err)
	}
}

// ensureStickyDir makes dir a directory with mode 1777 (as /tmp is on
// every distribution; an OCI image may lack it or ship it 0755).
func ensureStickyDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// Chmod, not MkdirAll's mode: the umask would drop the bits.
	if err := os.Chmod(dir, os.ModeDir|os.ModeSticky|0o777); err != nil {
		return fmt.Errorf("chmod 1777 %s: %w", dir, err)
	}
	return nil
}

// ensureMachineID gives the VM its own /etc/machine-id: 32 lowercase hex
// digits, generated at first boot and kept in the overlay's upper layer
// (system.cow) so it survives restarts. One inherited from the image (the
// file is not in upper, the VM's own layer) would be shared by every VM of
// that image, so it is replaced too; one the VM wrote itself is kept.
// root prefixes the guest paths and upper is the overlay's upper dir (both
// parameters for tests).
func ensureMachineID(root, upper string) error {
	// Anything else in upper (absent, empty, "uninitialized", a whiteout
	// the VM left by deleting it) means the VM has no id of its own yet.
	if own, err := os.ReadFile(filepath.Join(upper, machineIDPath)); err == nil && validMachineID(bytes.TrimSpace(own)) {
		return nil
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return err
	}
	id := hex.EncodeToString(b[:])
	if err := writeFileAtomic(root+machineIDPath, []byte(id+"\n"), 0o444); err != nil {
		return err
	}
	logf("machine id %s", id)
	return nil
}

func validMachineID(b []byte) bool {
	if len(b) != 32 {
		return false
	}
	for _, c := range b {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return !bytes.Equal(b, bytes.Repeat([]byte{'0'}, 32))
}
