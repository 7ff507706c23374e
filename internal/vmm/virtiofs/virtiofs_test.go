package virtiofs

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/testenv"
	"banger/internal/vmm"
)

// TestStartAsUser: virtiofsd starts in the owner's user namespace, holds
// its socket, and is still running once a client connected (a VM is what
// speaks vhost-user to it; TestVMShares in cmd/banger covers that).
func TestStartAsUser(t *testing.T) {
	testenv.RequireRoot(t, "to start virtiofsd in a user namespace")
	bin, err := Find()
	if err != nil {
		testenv.Skip(t, "%v", err)
	}
	dir, err := os.MkdirTemp("/tmp", "vfs-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	share := filepath.Join(dir, "share")
	os.Mkdir(share, 0o700)
	os.Chown(share, 65534, 65534)
	log := filepath.Join(dir, "log")
	// Reachable through a supplementary group only.
	group := filepath.Join(dir, "group")
	os.Mkdir(group, 0o2770)
	os.Chmod(group, 0o2770)
	os.Chown(group, 0, 4242)
	for _, sh := range []vmm.Share{
		{Tag: "banger0", HostPath: share, UID: 65534, GID: 65534},
		{Tag: "banger0", HostPath: share, ReadOnly: true, UID: 65534, GID: 65534},
		// virtiofsd drops supplementary groups: the daemon serves such
		// a directory with its group as the primary one (serveGID).
		{Tag: "banger0", HostPath: group, UID: 65534, GID: 4242, Groups: []uint32{4242}},
	} {
		ro := sh.ReadOnly
		sock := filepath.Join(dir, "fs.sock")
		p, err := Start(bin, sh, sock, log)
		if err != nil {
			t.Fatal(err)
		}
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		// VHOST_USER_GET_FEATURES (1), version flag 1, no payload: the
		// reply is a 12-byte header and the 8-byte feature mask.
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte{1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0}); err != nil {
			t.Fatal(err)
		}
		reply := make([]byte, 20)
		_, rerr := io.ReadFull(c, reply)
		if rerr != nil || p.Exited() {
			time.Sleep(200 * time.Millisecond)
			b, _ := os.ReadFile(log)
			t.Fatalf("virtiofsd (ro=%v): %v, exited %v: %s", ro, rerr, p.Exited(), b)
		}
		c.Close()
		select {
		case <-p.Done():
		case <-time.After(5 * time.Second):
			p.Kill()
			t.Errorf("virtiofsd did not exit when its client went away")
		}
	}
	if b, _ := os.ReadFile(log); strings.Contains(string(b), "helper") {
		t.Errorf("helper errors: %s", b)
	}
}
