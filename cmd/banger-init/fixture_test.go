package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
)

// Fixtures for booting real guests under QEMU: Debian's cloud kernel (virtio
// drivers as modules), a busybox-static rootfs, and ext4 disks made with
// e2fsprogs.

const fixtureRoot = "/tmp/banger-fixtures"

type kernelFixture struct {
	dir     string // dpkg-deb -x root: boot/, lib/modules/<release>/
	vmlinuz string
	release string
}

var kernelOnce struct {
	sync.Once
	k   kernelFixture
	err error
}

// debianKernel returns Debian's linux-image-cloud-amd64, fetched with
// apt-get download on first use and cached under /tmp/banger-fixtures.
func debianKernel(t *testing.T) kernelFixture {
	t.Helper()
	kernelOnce.Do(func() { kernelOnce.k, kernelOnce.err = fetchKernel() })
	if kernelOnce.err != nil {
		t.Fatalf("kernel fixture: %v", kernelOnce.err)
	}
	return kernelOnce.k
}

func fetchKernel() (kernelFixture, error) {
	dir := filepath.Join(fixtureRoot, "guest-kernel")
	if k, err := readKernel(dir); err == nil {
		return k, nil
	}
	if err := os.MkdirAll(fixtureRoot, 0o755); err != nil {
		return kernelFixture{}, err
	}
	tmp, err := os.MkdirTemp(fixtureRoot, ".guest-kernel-*")
	if err != nil {
		return kernelFixture{}, err
	}
	defer os.RemoveAll(tmp)
	deps, err := exec.Command("apt-cache", "depends", "linux-image-cloud-amd64").Output()
	if err != nil {
		return kernelFixture{}, fmt.Errorf("apt-cache depends linux-image-cloud-amd64: %w", err)
	}
	var pkg string
	for _, l := range strings.Split(string(deps), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "Depends:" && strings.HasPrefix(f[1], "linux-image-") {
			pkg = f[1]
		}
	}
	if pkg == "" {
		return kernelFixture{}, fmt.Errorf("no linux-image dependency in %q", deps)
	}
	dl := exec.Command("apt-get", "download", pkg)
	dl.Dir = tmp
	if out, err := dl.CombinedOutput(); err != nil {
		return kernelFixture{}, fmt.Errorf("apt-get download %s: %v\n%s", pkg, err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(debs) != 1 {
		return kernelFixture{}, fmt.Errorf("apt-get download %s gave %v", pkg, debs)
	}
	x := filepath.Join(tmp, "x")
	if out, err := exec.Command("dpkg-deb", "-x", debs[0], x).CombinedOutput(); err != nil {
		return kernelFixture{}, fmt.Errorf("dpkg-deb -x: %v\n%s", err, out)
	}
	if err := os.Rename(x, dir); err != nil && !os.IsExist(err) {
		if _, err2 := readKernel(dir); err2 != nil { // lost a race: the winner's copy is fine
			return kernelFixture{}, err
		}
	}
	return readKernel(dir)
}

func readKernel(dir string) (kernelFixture, error) {
	vmlinuz, _ := filepath.Glob(filepath.Join(dir, "boot", "vmlinuz-*"))
	if len(vmlinuz) != 1 {
		return kernelFixture{}, fmt.Errorf("no single vmlinuz in %s", dir)
	}
	rel := strings.TrimPrefix(filepath.Base(vmlinuz[0]), "vmlinuz-")
	if _, err := os.Stat(filepath.Join(dir, "lib", "modules", rel, "kernel")); err != nil {
		return kernelFixture{}, err
	}
	return kernelFixture{dir: dir, vmlinuz: vmlinuz[0], release: rel}, nil
}

// moduleOrder returns the given modules and everything they depend on,
// dependencies first, as paths relative to k.dir. Debian ships no
// modules.dep, so read depends= from each module's .modinfo section.
func moduleOrder(t *testing.T, k kernelFixture, names ...string) []string {
	t.Helper()
	base := filepath.Join("lib", "modules", k.release)
	index := map[string]string{} // module name -> relative path
	filepath.WalkDir(filepath.Join(k.dir, base, "kernel"), func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".ko") {
			rel, _ := filepath.Rel(k.dir, p)
			index[strings.ReplaceAll(strings.TrimSuffix(d.Name(), ".ko"), "-", "_")] = rel
		}
		return nil
	})
	var order []string
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(string)
	visit = func(name string) {
		name = strings.ReplaceAll(name, "-", "_")
		switch state[name] {
		case 1:
			t.Fatalf("module dependency cycle at %s", name)
		case 2:
			return
		}
		rel, ok := index[name]
		if !ok {
			t.Fatalf("module %s not found under %s (built in?)", name, base)
		}
		state[name] = 1
		for _, d := range modinfoDepends(t, filepath.Join(k.dir, rel)) {
			visit(d)
		}
		state[name] = 2
		order = append(order, rel)
	}
	for _, n := range names {
		visit(n)
	}
	return order
}

func modinfoDepends(t *testing.T, path string) []string {
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		t.Fatalf("%s: no .modinfo section", path)
	}
	data, err := sec.Data()
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			if len(v) == 0 {
				return nil
			}
			return strings.Split(string(v), ",")
		}
	}
	return nil
}

// buildInit compiles banger-init as the daemon ships it: static, no cgo.
func buildInitTo(t *testing.T, out string) string {
	t.Helper()
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build banger-init: %v\n%s", err, b)
	}
	return out
}

// mkfs makes an ext4 image of size at path, populated from dir when dir is
// not empty.
func mkfs(t *testing.T, path, size, dir string) {
	t.Helper()
	args := []string{"-q", "-F", "-t", "ext4"}
	if dir != "" {
		args = append(args, "-d", dir)
	}
	args = append(args, path, size)
	if out, err := exec.Command("mkfs.ext4", args...).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 %v: %v\n%s", args, err, out)
	}
}

// busyboxRootfs makes a read-only image rootfs holding only busybox-static
// and its applet links: the smallest image banger must support.
//
// extra files (path relative to the root: content) are added, e.g. an
// /etc/inittab for an image-init test.
func busyboxRootfs(t *testing.T, path string, extra ...map[string]string) {
	t.Helper()
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatalf("busybox-static is needed for the rootfs fixture (apt-get install busybox-static): %v", err)
	}
	if out, _ := exec.Command("file", "-L", bb).Output(); len(out) > 0 && !bytes.Contains(out, []byte("statically linked")) {
		t.Fatalf("%s is not static (install busybox-static): %s", bb, out)
	}
	root := t.TempDir()
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "run", "tmp", "root", "var"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	os.Chmod(filepath.Join(root, "tmp"), 0o1777)
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(root, "bin/busybox"), data, 0o755)
	list, err := exec.Command(bb, "--list-full").Output()
	if err != nil {
		t.Fatalf("busybox --list-full: %v", err)
	}
	for _, l := range strings.Fields(string(list)) {
		if l == "bin/busybox" {
			continue
		}
		os.Symlink("/bin/busybox", filepath.Join(root, l))
	}
	os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc/group"), []byte("root:x:0:\ntty:x:5:\n"), 0o644)
	for _, files := range extra {
		for name, body := range files {
			os.MkdirAll(filepath.Dir(filepath.Join(root, name)), 0o755)
			if err := os.WriteFile(filepath.Join(root, name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	mkfs(t, path, "48M", root)
}

// workDisk makes a work disk authorizing pub.
func workDisk(t *testing.T, path string, pub ssh.PublicKey) {
	t.Helper()
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, ".ssh"), 0o700)
	os.WriteFile(filepath.Join(root, ".ssh/authorized_keys"), ssh.MarshalAuthorizedKey(pub), 0o600)
	mkfs(t, path, "80M", root)
}

func testSigner(t *testing.T) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
