package kernelcat

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"banger/internal/disk"
	"banger/internal/testenv"
)

func needModulesDiskTools(t *testing.T) {
	t.Helper()
	if _, err := findDepmod(); err != nil {
		testenv.Skip(t, "%v", err)
	}
	testenv.RequireTool(t, "mkfs.ext4", "debugfs", "e2fsck")
}

func inode(t *testing.T, p string) uint64 {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Sys().(*syscall.Stat_t).Ino
}

// TestModulesDiskDebian imports the real Debian cloud kernel (the package
// the default catalog entry pulls) and checks its modules disk: the whole
// tree plus depmod's indexes at the disk's root, and EnsureModulesDisk
// idempotent and building once under 8 parallel callers.
func TestModulesDiskDebian(t *testing.T) {
	if testing.Short() {
		t.Skip("downloads the Debian kernel package")
	}
	needModulesDiskTools(t)
	root := debianKernelRoot(t)
	kernels, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(kernels) != 1 {
		t.Fatalf("fixture kernels %v", kernels)
	}
	release := strings.TrimPrefix(filepath.Base(kernels[0]), "vmlinuz-")
	dir := t.TempDir()
	ctx := context.Background()
	start := time.Now()
	m, err := Import(ctx, "deb", kernels[0], "", filepath.Join(root, "lib", "modules"), dir)
	if err != nil {
		t.Fatal(err)
	}
	importTime := time.Since(start)
	if m.ModulesTree != ModulesTreeDir || m.ModulesDisk != ModulesDiskFile || m.ModulesRelease != release || m.Release != release {
		t.Fatalf("manifest: tree %q disk %q release %q/%q, want %s", m.ModulesTree, m.ModulesDisk, m.ModulesRelease, m.Release, release)
	}
	if len(m.Modules) == 0 || !strings.HasPrefix(m.Modules[0], "modules/kernel/") {
		t.Fatalf("boot closure %v", m.Modules)
	}
	if m.Files[ModulesTreeDir+"/kernel/net/bridge/br_netfilter.ko"] == "" || m.Files[ModulesTreeDir+"/modules.order"] == "" {
		t.Fatal("the kept tree is not in the manifest's files")
	}
	if _, ok := m.Files[ModulesDiskFile]; ok {
		t.Fatal("the derived modules disk must not be in Files")
	}
	kdir := Dir(dir, "deb")
	img := filepath.Join(kdir, ModulesDiskFile)
	if got, err := ReadLocal(dir, "deb"); err != nil || got.ModulesDisk != ModulesDiskFile || got.ModulesRelease != release {
		t.Fatalf("ReadLocal: %+v %v", got, err)
	}
	// What the guest's modprobe reads, at the disk's root.
	dep, err := disk.ReadFileFromExt4(ctx, img, "/modules.dep")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(dep), "kernel/net/bridge/br_netfilter.ko: kernel/net/bridge/bridge.ko") {
		t.Fatalf("modules.dep lacks br_netfilter's dependencies:\n%.500s", dep)
	}
	for _, p := range []string{"/kernel/net/bridge/br_netfilter.ko", "/kernel/fs/overlayfs/overlay.ko", "/kernel/drivers/net/veth.ko",
		"/kernel/fs/fuse/fuse.ko", "/kernel/net/netfilter/nf_nat.ko", "/modules.alias", "/modules.dep.bin", "/modules.builtin"} {
		b, err := disk.ReadFileFromExt4(ctx, img, p)
		if err != nil || len(b) == 0 {
			t.Errorf("%s on the modules disk: %d bytes, %v", p, len(b), err)
		}
		if strings.HasSuffix(p, ".ko") {
			want, _ := os.ReadFile(filepath.Join(root, "lib", "modules", release, p))
			if string(b) != string(want) {
				t.Errorf("%s differs from the package's", p)
			}
		}
	}
	alias, _ := disk.ReadFileFromExt4(ctx, img, "/modules.alias")
	if !strings.Contains(string(alias), "alias rtnl-link-veth veth") {
		t.Errorf("modules.alias lacks veth's rtnl-link alias")
	}
	var st syscall.Stat_t
	syscall.Stat(img, &st)
	t.Logf("import with modules disk: %s; %s: %d MiB apparent, %d MiB allocated; kept tree %d MiB",
		importTime.Round(time.Millisecond), ModulesDiskFile, st.Size>>20, st.Blocks*512>>20, m.SizeBytes>>20)
	// Nothing left behind by the build.
	ents, _ := os.ReadDir(kdir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") || strings.HasSuffix(e.Name(), ".tmp") {
			t.Errorf("leftover %s in the kernel dir", e.Name())
		}
	}

	// Present: returned as is.
	before := modulesDiskBuilds.Load()
	ino := inode(t, img)
	got, err := EnsureModulesDisk(ctx, kdir, m)
	if err != nil || got != img || inode(t, img) != ino || modulesDiskBuilds.Load() != before {
		t.Fatalf("Ensure on a present disk: %q %v (rebuilt: %v)", got, err, inode(t, img) != ino)
	}

	// Absent (deleted, or a format change): 8 parallel starts, one build,
	// and a leftover of a killed build is cleaned.
	os.Remove(img)
	os.Mkdir(filepath.Join(kdir, modulesStagePrefix+"killed"), 0o755)
	os.WriteFile(disk.TempSibling(img, "build"), []byte("half"), 0o644)
	var wg sync.WaitGroup
	paths := make([]string, 8)
	errs := make([]error, 8)
	start = time.Now()
	for i := range paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			paths[i], errs[i] = EnsureModulesDisk(ctx, kdir, m)
		}()
	}
	wg.Wait()
	t.Logf("8 parallel EnsureModulesDisk on a missing disk: %s", time.Since(start).Round(time.Millisecond))
	for i := range paths {
		if errs[i] != nil || paths[i] != img {
			t.Fatalf("caller %d: %q %v", i, paths[i], errs[i])
		}
	}
	if n := modulesDiskBuilds.Load() - before; n != 1 {
		t.Fatalf("%d builds, want 1", n)
	}
	if err := disk.Fsck(ctx, img); err != nil {
		t.Fatal(err)
	}
	ents, _ = os.ReadDir(kdir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") || strings.HasSuffix(e.Name(), ".tmp") {
			t.Errorf("leftover %s in the kernel dir", e.Name())
		}
	}
}

// TestModulesDiskSmall covers the decisions on a tiny fake tree: a full
// tree gets a disk, compressed modules stay compressed in it, a tree with
// every module built in gets none, a dir of .ko files gets none, and a
// kernel pulled before trees were kept gets "" from EnsureModulesDisk.
func TestModulesDiskSmall(t *testing.T) {
	needModulesDiskTools(t)
	ctx := context.Background()
	src := t.TempDir()
	kernel := filepath.Join(src, "vmlinux")
	os.WriteFile(kernel, fakeVmlinux("5.5.5-md", 1<<16), 0o644)
	write := func(root string, files map[string][]byte) {
		for rel, b := range files {
			p := filepath.Join(root, rel)
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	boot := map[string][]byte{}
	for _, n := range BootModules {
		if n != "ext4" {
			boot["kernel/boot/"+n+".ko"] = fakeModule(n)
		}
	}
	boot["modules.builtin"] = []byte("kernel/fs/ext4/ext4.ko\n")
	boot["modules.order"] = []byte("")
	full := filepath.Join(src, "full", "5.5.5-md")
	write(full, boot)
	write(full, map[string][]byte{
		"kernel/extra/bridge.ko":          fakeModule("bridge"),
		"kernel/extra/br_netfilter.ko.xz": compressXZ(t, fakeModule("br_netfilter", "bridge")),
	})
	os.Symlink("/usr/src/linux-headers", filepath.Join(full, "build"))
	dir := t.TempDir()
	m, err := Import(ctx, "full", kernel, "", filepath.Dir(full), dir)
	if err != nil {
		t.Fatal(err)
	}
	kdir := Dir(dir, "full")
	if m.ModulesDisk != ModulesDiskFile || m.ModulesRelease != "5.5.5-md" {
		t.Fatalf("manifest %+v", m)
	}
	if _, err := os.Lstat(filepath.Join(kdir, ModulesTreeDir, "build")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("symlink kept in the tree: %v", err)
	}
	img := filepath.Join(kdir, ModulesDiskFile)
	dep, err := disk.ReadFileFromExt4(ctx, img, "/modules.dep")
	// depmod derives dependencies from symbols, which fake modules lack: the
	// index must list every module, the compressed one under its .xz name.
	if err != nil || !strings.Contains(string(dep), "kernel/extra/br_netfilter.ko.xz:") || !strings.Contains(string(dep), "kernel/extra/bridge.ko:") {
		t.Fatalf("modules.dep %q %v", dep, err)
	}
	if _, err := os.Stat(filepath.Join(src, "full", "5.5.5-md", "modules.dep")); err == nil {
		t.Fatal("depmod wrote into the imported tree")
	}
	if _, err := os.Stat(filepath.Join(kdir, ModulesTreeDir, "modules.dep")); err == nil {
		t.Fatal("depmod wrote into the kept tree")
	}

	// Old kernels (closure only), and a tree gone missing: no disk, no error.
	old := *m
	old.ModulesTree, old.ModulesDisk, old.ModulesRelease = "", "", ""
	if p, err := EnsureModulesDisk(ctx, kdir, &old); p != "" || err != nil {
		t.Fatalf("old kernel: %q %v", p, err)
	}
	os.Remove(img)
	os.RemoveAll(filepath.Join(kdir, ModulesTreeDir))
	if p, err := EnsureModulesDisk(ctx, kdir, m); p != "" || err != nil {
		t.Fatalf("tree gone: %q %v", p, err)
	}
	bad := *m
	bad.ModulesTree = "../x"
	if _, err := EnsureModulesDisk(ctx, kdir, &bad); err == nil {
		t.Fatal("a tree path leaving the kernel dir was accepted")
	}

	// Everything built in: a tree with no module files.
	builtin := filepath.Join(src, "builtin", "5.5.5-md")
	write(builtin, map[string][]byte{"modules.builtin": []byte("kernel/fs/ext4/ext4.ko\n"), "modules.order": nil})
	if _, err := Import(ctx, "builtin", kernel, "", builtin, dir); err == nil {
		t.Fatal("want the boot-module error for a kernel whose virtio drivers are neither modules nor builtin")
	}

	// A plain dir of .ko files: all are boot modules, no tree, no disk.
	plain := filepath.Join(src, "plain")
	write(plain, map[string][]byte{"a.ko": fakeModule("a")})
	m, err = Import(ctx, "plain", kernel, "", plain, dir)
	if err != nil {
		t.Fatal(err)
	}
	if m.ModulesTree != "" || m.ModulesDisk != "" || len(m.Modules) != 1 {
		t.Fatalf("plain dir manifest %+v", m)
	}
	if p, err := EnsureModulesDisk(ctx, Dir(dir, "plain"), m); p != "" || err != nil {
		t.Fatalf("plain dir: %q %v", p, err)
	}

	// A waiter gives up with its ctx while another holds the build lock.
	unlock, err := lockDir(ctx, kdir)
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(kdir, ModulesTreeDir), 0o755)
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := EnsureModulesDisk(short, kdir, m2(m, "full")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting on the lock: %v", err)
	}
	unlock()
}

// m2 is a manifest with a kept tree named name, for lock tests.
func m2(m *Manifest, name string) *Manifest {
	c := *m
	c.Name, c.ModulesTree, c.ModulesDisk, c.ModulesRelease = name, ModulesTreeDir, ModulesDiskFile, "5.5.5-md"
	return &c
}
