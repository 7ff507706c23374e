package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"banger/internal/guestproto"
)

func mkroot(t *testing.T, files map[string]string, links map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, body := range files {
		full := filepath.Join(root, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for p, target := range links {
		full := filepath.Join(root, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.Symlink(target, full); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestResolveInitMode(t *testing.T) {
	// Debian with usrmerge: /sbin -> usr/sbin, /usr/sbin/init -> ../lib/systemd/systemd.
	debian := mkroot(t, map[string]string{"usr/lib/systemd/systemd": "elf"},
		map[string]string{"sbin": "usr/sbin", "usr/sbin/init": "../lib/systemd/systemd", "lib": "usr/lib"})
	// An absolute link must resolve inside the root, not on the host.
	absolute := mkroot(t, map[string]string{"lib/systemd/systemd": "elf"}, map[string]string{"sbin/init": "/lib/systemd/systemd"})
	busybox := mkroot(t, map[string]string{"bin/busybox": "elf"}, map[string]string{"sbin/init": "../bin/busybox"})
	none := mkroot(t, map[string]string{"bin/sh": "elf"}, nil)
	loop := mkroot(t, nil, map[string]string{"sbin/init": "init"})
	for _, tc := range []struct {
		name, root, mode, want, wantPath string
		note                             bool
	}{
		{"debian auto", debian, guestproto.InitAuto, guestproto.InitImage, "/usr/lib/systemd/systemd", false},
		{"debian banger", debian, guestproto.InitBanger, guestproto.InitBanger, "/usr/lib/systemd/systemd", false},
		{"absolute link", absolute, guestproto.InitAuto, guestproto.InitImage, "/lib/systemd/systemd", false},
		{"busybox auto", busybox, guestproto.InitAuto, guestproto.InitBanger, "/bin/busybox", false},
		{"busybox image", busybox, guestproto.InitImage, guestproto.InitImage, "/bin/busybox", false},
		{"no init, image", none, guestproto.InitImage, guestproto.InitBanger, "", true},
		{"no init, auto", none, guestproto.InitAuto, guestproto.InitBanger, "", false},
		{"symlink loop", loop, guestproto.InitAuto, guestproto.InitBanger, "", false},
		{"absent key", debian, "", guestproto.InitBanger, "/usr/lib/systemd/systemd", false},
	} {
		got, p, note := resolveInitMode(tc.mode, tc.root)
		if got != tc.want || p != tc.wantPath || (note != "") != tc.note {
			t.Errorf("%s: got %q %q note %q; want %q %q note %v", tc.name, got, p, note, tc.want, tc.wantPath, tc.note)
		}
	}
}

func TestLookupAccount(t *testing.T) {
	dir := t.TempDir()
	passwd, group := filepath.Join(dir, "passwd"), filepath.Join(dir, "group")
	os.WriteFile(passwd, []byte("root:x:0:0:root:/root:/bin/sh\n# comment\nbroken line\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\napp:x:1000:1000::/home/app:/bin/bash\n"), 0o644)
	os.WriteFile(group, []byte("root:x:0:\nnogroup:x:65534:\napp:x:1000:\nwheel:x:10:app,other\nweb:x:33:\n"), 0o644)
	for _, tc := range []struct {
		spec     string
		uid, gid uint32
		groups   string
		home     string
	}{
		{"nobody", 65534, 65534, "[65534]", "/nonexistent"},
		{"app", 1000, 1000, "[1000 10]", "/home/app"},
		{"1000", 1000, 1000, "[1000 10]", "/home/app"},
		{"app:web", 1000, 33, "[33]", "/home/app"},
		{"app:33", 1000, 33, "[33]", "/home/app"},
		{"4242", 4242, 0, "[0]", "/"},
	} {
		a, err := lookupAccount(tc.spec, passwd, group)
		if err != nil {
			t.Errorf("%s: %v", tc.spec, err)
			continue
		}
		if a.uid != tc.uid || a.gid != tc.gid || fmt.Sprint(a.groups) != tc.groups || a.home != tc.home {
			t.Errorf("%s: got %+v", tc.spec, a)
		}
	}
	for _, bad := range []string{"ghost", "app:ghosts", "a b", "app:"} {
		if _, err := lookupAccount(bad, passwd, group); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}
