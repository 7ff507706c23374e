package main

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// The mountinfo systemd-shutdown leaves for the exitrd (captured from a
// debian-bookworm-systemd guest, trimmed): the old root and its submounts
// under /oldroot, the exitrd's own root and binds outside it.
const exitrdMountinfo = `22 30 0:20 / /oldroot/proc rw,nosuid,nodev,noexec,relatime - proc proc rw
25 30 0:22 / /oldroot/run rw,nosuid,nodev,relatime - tmpfs tmpfs rw,mode=755,inode64
30 40 0:23 / /oldroot ro,relatime - overlay overlay ro,lowerdir=/mnt/lower,upperdir=/mnt/upper/upper,workdir=/mnt/upper/work
37 25 0:29 / /oldroot/run/lock rw,nosuid,nodev,noexec,relatime - tmpfs tmpfs rw,size=5120k,inode64
45 30 254:32 / /oldroot/my\040disk rw,noatime shared:1 - ext4 /dev/vdc rw
40 1 0:22 /initramfs / rw,nosuid,nodev,relatime - tmpfs tmpfs rw,mode=755,inode64
43 40 0:22 / /run rw,nosuid,nodev,relatime - tmpfs tmpfs rw,mode=755,inode64
46 40 0:22 / /oldrootx rw - tmpfs tmpfs rw
`

func TestMountsBelow(t *testing.T) {
	p := filepath.Join(t.TempDir(), "mountinfo")
	if err := os.WriteFile(p, []byte(exitrdMountinfo), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := mountsBelow(p, "/oldroot")
	if err != nil {
		t.Fatal(err)
	}
	// Latest first: submounts before their parents, the overlay before
	// what was mounted ahead of it; nothing outside /oldroot.
	want := []mountEntry{
		{path: "/oldroot/my disk", fstype: "ext4"},
		{path: "/oldroot/run/lock", fstype: "tmpfs"},
		{path: "/oldroot", fstype: "overlay", readOnly: true},
		{path: "/oldroot/run", fstype: "tmpfs"},
		{path: "/oldroot/proc", fstype: "proc"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("mountsBelow:\n got %+v\nwant %+v", got, want)
	}
	if none, err := mountsBelow(p, "/elsewhere"); err != nil || len(none) != 0 {
		t.Errorf("mountsBelow(/elsewhere) = %v, %v", none, err)
	}
}

func TestUnescapeMountPath(t *testing.T) {
	for in, want := range map[string]string{
		`/a\040b`:  "/a b",
		`/tab\011`: "/tab\t",
		`/plain`:   "/plain",
		`/bad\09x`: `/bad\09x`,
		`/end\04`:  `/end\04`,
	} {
		if got := unescapeMountPath(in); got != want {
			t.Errorf("unescapeMountPath(%q) = %q, want %q", in, got, want)
		}
	}
}
