package kernelcat

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/testenv"

	"golang.org/x/sys/unix"
)

func TestValidateDebSrc(t *testing.T) {
	good := Entry{Name: "k", Source: Source{Type: SourceDebSrc, Package: "linux-source-6.1", Config: "microvm-6.1.config"}}
	if err := ValidateEntry(good); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		src  Source
		want string
	}{
		{Source{Type: SourceDebSrc, Package: "Bad Name", Config: "microvm-6.1.config"}, `"Bad Name"`},
		{Source{Type: SourceDebSrc, Package: "linux-source-6.1", Config: "nope.config"}, `no embedded kernel config "nope.config"`},
		{Source{Type: SourceDebSrc, Package: "linux-source-6.1"}, `no embedded kernel config ""`},
		{Source{Type: SourceDebSrc, Package: "linux-source-6.1", Config: "microvm-6.1.config", URL: "http://x/"}, "takes only"},
		{Source{Type: SourceDeb, Package: "linux-image-amd64", Config: "microvm-6.1.config"}, "takes only"},
	} {
		err := ValidateEntry(Entry{Name: "k", Source: c.src})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want %q", c.src, err, c.want)
		}
	}
	// The embedded catalog's entry names an embedded config.
	cat, err := LoadEmbedded()
	if err != nil {
		t.Fatal(err)
	}
	e, ok := cat.Lookup("microvm-6.1")
	if !ok || e.Source.Type != SourceDebSrc {
		t.Fatalf("microvm-6.1 entry: %+v", e)
	}
}

func TestParseCandidate(t *testing.T) {
	out := "linux-source-6.1:\n  Installed: (none)\n  Candidate: 6.1.192-3\n  Version table:\n     6.1.192-3 500\n"
	if v := parseCandidate(out); v != "6.1.192-3" {
		t.Fatalf("candidate %q", v)
	}
	if v := parseCandidate("x:\n  Installed: (none)\n  Candidate: (none)\n"); v != "" {
		t.Fatalf("no candidate: %q", v)
	}
}

func TestCheckBuildToolsNamesWhatIsMissing(t *testing.T) {
	defer func(l func(string) (string, error), s func(string) (os.FileInfo, error)) { lookPath, statFile = l, s }(lookPath, statFile)
	lookPath = func(p string) (string, error) {
		if p == "flex" || p == "bison" {
			return "", exec.ErrNotFound
		}
		return "/usr/bin/" + p, nil
	}
	statFile = func(p string) (os.FileInfo, error) {
		if strings.HasSuffix(p, "gelf.h") {
			return nil, fs.ErrNotExist
		}
		return nil, nil
	}
	err := CheckBuildTools()
	if err == nil {
		t.Fatal("no error with flex, bison and gelf.h missing")
	}
	for _, want := range []string{"flex", "bison", "gelf.h", "apt-get install bison flex libelf-dev", "install-deps.sh"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	lookPath = func(p string) (string, error) { return "/usr/bin/" + p, nil }
	statFile = func(string) (os.FileInfo, error) { return nil, nil }
	if err := CheckBuildTools(); err != nil {
		t.Fatal(err)
	}
}

func TestKconfigChecks(t *testing.T) {
	frag := parseKconfig("# c\nCONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\nCONFIG_N=64\n")
	final := parseKconfig("CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\nCONFIG_N=64\nCONFIG_OTHER=y\n")
	got := droppedOptions(frag, final)
	want := []string{"CONFIG_B=y (got n)", "CONFIG_C=n (got y)"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("dropped %v, want %v", got, want)
	}
	// A symbol absent from the final config is off.
	if d := droppedOptions(parseKconfig("# CONFIG_ACPI is not set\n"), map[string]string{}); len(d) != 0 {
		t.Fatalf("absent = n: %v", d)
	}
	frag6, err := ConfigFragment("microvm-6.1.config")
	if err != nil {
		t.Fatal(err)
	}
	if m := bootModeOf(parseKconfig(string(frag6))); m != BootMMIO {
		t.Fatalf("microvm-6.1.config boots %q, want mmio", m)
	}
	if m := bootModeOf(parseKconfig("CONFIG_VIRTIO_MMIO=y\nCONFIG_VIRTIO_BLK=m\n")); m != BootACPI {
		t.Fatalf("modular virtio: %q", m)
	}
}

func TestBuildKeyFollowsInputs(t *testing.T) {
	k1, s1 := buildKey("linux-source-6.1", "6.1.1-1", []byte("CONFIG_A=y\n"))
	k2, _ := buildKey("linux-source-6.1", "6.1.1-2", []byte("CONFIG_A=y\n"))
	k3, s3 := buildKey("linux-source-6.1", "6.1.1-1", []byte("CONFIG_A=n\n"))
	k4, _ := buildKey("linux-source-6.1", "6.1.1-1", []byte("CONFIG_A=y\n"))
	if k1 == k2 || k1 == k3 || s1 == s3 || k1 != k4 {
		t.Fatalf("keys %s %s %s %s", k1, k2, k3, k4)
	}
	if !strings.HasPrefix(k1, "linux-source-6.1-6.1.1-1-") {
		t.Fatalf("key %s", k1)
	}
	if k, _ := buildKey("p", "1:2.0~rc/1", nil); strings.ContainsAny(k, ":~/") {
		t.Fatalf("unsafe key %s", k)
	}
}

// seedBuild writes a cache entry as a build would have.
func seedBuild(t *testing.T, cache, key string, info BuildInfo, bz []byte, config string) {
	t.Helper()
	dir := filepath.Join(cache, key)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ib, _ := json.Marshal(info)
	for name, b := range map[string][]byte{cacheKernel: bz, cacheConfig: []byte(config), cacheInfo: ib} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// debsrcCacheSetup finds the real candidate version (apt-cache policy: no
// network) and the build key of the embedded microvm entry.
func debsrcCacheSetup(t *testing.T) (Entry, string, string) {
	t.Helper()
	testenv.RequireTool(t, "apt-cache")
	cat, err := LoadEmbedded()
	if err != nil {
		t.Fatal(err)
	}
	e, _ := cat.Lookup("microvm-6.1")
	version, err := candidateVersion(t.Context(), e.Source.Package)
	if err != nil {
		testenv.Skip(t, "apt knows no %s here: %v", e.Source.Package, err)
	}
	frag, _ := ConfigFragment(e.Source.Config)
	key, _ := buildKey(e.Source.Package, version, frag)
	return e, version, key
}

// A pull whose build is cached copies it: no build tool is looked at, and
// the manifest records the build and the boot mode of its config.
func TestDebSrcFromCache(t *testing.T) {
	e, version, key := debsrcCacheSetup(t)
	defer func(l func(string) (string, error)) { lookPath = l }(lookPath)
	lookPath = func(p string) (string, error) {
		t.Errorf("a cached pull looked for build tool %s", p)
		return "", exec.ErrNotFound
	}
	cache := t.TempDir()
	frag, _ := ConfigFragment(e.Source.Config)
	bz := fakeBzImage(compressGzip(t, fakeVmlinux("6.1.192-banger", 4096)), "6.1.192-banger", 0x20f, 4096)
	seedBuild(t, cache, key, BuildInfo{Package: e.Source.Package, Version: version, Config: e.Source.Config, Key: key, BuildSeconds: 1234}, bz, string(frag))
	dir := t.TempDir()
	var stages []string
	m, err := FetchWith(context.Background(), e, dir, Options{BuildCache: cache}, func(stage, _ string, _, _ int64) { stages = append(stages, stage) })
	if err != nil {
		t.Fatal(err)
	}
	if m.Boot != BootMMIO || m.Build == nil || !m.Build.Cached || m.Build.Version != version || m.Build.Key != key || m.Release != "6.1.192-banger" {
		t.Fatalf("manifest: boot %q build %+v release %q", m.Boot, m.Build, m.Release)
	}
	if len(m.Modules) != 0 || m.ModulesTree != "" {
		t.Fatalf("a built-in kernel lists modules: %v %q", m.Modules, m.ModulesTree)
	}
	if !strings.Contains(strings.Join(stages, ","), "cached") {
		t.Fatalf("stages %v", stages)
	}
	back, err := ReadLocal(dir, e.Name)
	if err != nil || back.Boot != BootMMIO || back.Build.Key != key {
		t.Fatalf("ReadLocal: %+v %v", back, err)
	}
	// The cache entry stays for the next pull.
	if _, err := os.Stat(filepath.Join(cache, key, cacheKernel)); err != nil {
		t.Fatal(err)
	}
}

// A cached build with a module tree (a config with CONFIG_MODULES)
// publishes it like a deb kernel's: the release is the tree's directory,
// the initramfs loads nothing (an mmio kernel has its boot drivers built
// in, so no BootModules are looked for), and the tree becomes the modules
// disk.
func TestDebSrcFromCacheWithModules(t *testing.T) {
	needModulesDiskTools(t)
	e, version, key := debsrcCacheSetup(t)
	cache := t.TempDir()
	frag, _ := ConfigFragment(e.Source.Config)
	const rel = "6.1.192-banger"
	bz := fakeBzImage(compressGzip(t, fakeVmlinux(rel, 4096)), rel, 0x20f, 4096)
	seedBuild(t, cache, key, BuildInfo{Package: e.Source.Package, Version: version, Config: e.Source.Config, Key: key}, bz, string(frag))
	mods := filepath.Join(cache, key, cacheModules, rel)
	for name, b := range map[string][]byte{
		"kernel/net/llc/llc.ko":             fakeModule("llc"),
		"kernel/net/bridge/bridge.ko":       fakeModule("bridge", "llc"),
		"kernel/net/bridge/br_netfilter.ko": fakeModule("br_netfilter", "bridge"),
		"modules.order":                     []byte("kernel/net/llc/llc.ko\nkernel/net/bridge/bridge.ko\nkernel/net/bridge/br_netfilter.ko\n"),
		"modules.builtin":                   []byte("kernel/drivers/block/virtio_blk.ko\nkernel/fs/overlayfs/overlay.ko\n"),
	} {
		p := filepath.Join(mods, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	m, err := FetchWith(context.Background(), e, dir, Options{BuildCache: cache}, func(string, string, int64, int64) {})
	if err != nil {
		t.Fatal(err)
	}
	if m.Boot != BootMMIO || m.Release != rel || m.ModulesRelease != rel || m.ModulesTree == "" || len(m.Modules) != 0 {
		t.Fatalf("manifest: boot %q release %q modules release %q tree %q initramfs modules %v", m.Boot, m.Release, m.ModulesRelease, m.ModulesTree, m.Modules)
	}
	disk, err := EnsureModulesDisk(context.Background(), Dir(dir, e.Name), m)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("debugfs", "-R", "cat /modules.dep", disk).Output()
	if err != nil || !strings.Contains(string(out), "kernel/net/bridge/br_netfilter.ko:") {
		t.Fatalf("modules.dep on the modules disk: %q %v", out, err)
	}
}

// A pull that finds another build of its key in progress (the key's flock
// held: another daemon, CI job or goroutine) waits for it and then uses
// its result instead of building again.
func TestDebSrcWaitsForConcurrentBuild(t *testing.T) {
	e, version, key := debsrcCacheSetup(t)
	cache := t.TempDir()
	lock := filepath.Join(cache, key+".lock")
	f, err := os.Create(lock)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var mu sync.Mutex
	var stages []string
	done := make(chan error, 1)
	var m *Manifest
	go func() {
		var err error
		m, err = FetchWith(context.Background(), e, dir, Options{BuildCache: cache}, func(stage, _ string, _, _ int64) {
			mu.Lock()
			stages = append(stages, stage)
			mu.Unlock()
		})
		done <- err
	}()
	// It must be waiting on the lock, not building.
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		s := strings.Join(stages, ",")
		mu.Unlock()
		if strings.Contains(s, "build_lock") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no build_lock stage: %s", s)
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("pull finished while another build held the lock: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	frag, _ := ConfigFragment(e.Source.Config)
	bz := fakeBzImage(compressGzip(t, fakeVmlinux("6.1.192-banger", 4096)), "6.1.192-banger", 0x20f, 4096)
	seedBuild(t, cache, key, BuildInfo{Package: e.Source.Package, Version: version, Key: key}, bz, string(frag))
	unix.Flock(int(f.Fd()), unix.LOCK_UN)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !m.Build.Cached {
		t.Fatalf("built again: %+v", m.Build)
	}
}

// The real source package, configured as a pull does: every option of the
// embedded fragment survives make olddefconfig and the result is an mmio
// kernel. (The build itself is the pull's, cached; see smoke.)
func TestMicroVMConfigOnRealSource(t *testing.T) {
	if testing.Short() {
		t.Skip("downloads and unpacks the kernel source (~140 MB)")
	}
	e, version, _ := debsrcCacheSetup(t)
	testenv.RequireTool(t, "apt-get", "dpkg-deb", "tar", "xz", "make", "gcc", "flex", "bison", "bc")
	work := t.TempDir()
	tree, err := unpackSource(t.Context(), e.Source.Package, version, work, func(string, string, int64, int64) {})
	if err != nil {
		if errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
		testenv.Skip(t, "cannot download %s=%s here: %v", e.Source.Package, version, err)
	}
	frag, _ := ConfigFragment(e.Source.Config)
	cfg, err := configure(t.Context(), tree, frag, func(string, string, int64, int64) {})
	if err != nil {
		t.Fatal(err)
	}
	final, err := os.ReadFile(filepath.Join(tree, ".config"))
	if err != nil {
		t.Fatal(err)
	}
	if onDisk := parseKconfig(string(final)); !maps.Equal(cfg, onDisk) {
		t.Fatalf("configure returned %d symbols, .config has %d", len(cfg), len(onDisk))
	}
	if bootModeOf(cfg) != BootMMIO || cfg["CONFIG_ACPI"] == "y" || cfg["CONFIG_MODULES"] != "y" || cfg["CONFIG_PCI"] == "y" {
		t.Fatalf("config: boot %q ACPI %q MODULES %q PCI %q", bootModeOf(cfg), cfg["CONFIG_ACPI"], cfg["CONFIG_MODULES"], cfg["CONFIG_PCI"])
	}
	// Docker's network pieces are modules (the modules disk), the LSM its
	// default profile needs and free page reporting are built in.
	for sym, want := range map[string]string{"CONFIG_BRIDGE": "m", "CONFIG_BRIDGE_NETFILTER": "m", "CONFIG_VETH": "m", "CONFIG_NF_NAT": "m",
		"CONFIG_OVERLAY_FS": "y", "CONFIG_SECURITY_APPARMOR": "y", "CONFIG_VIRTIO_BALLOON": "y", "CONFIG_PAGE_REPORTING": "y"} {
		if cfg[sym] != want {
			t.Errorf("%s=%q, want %q", sym, cfg[sym], want)
		}
	}
	// A fragment option whose dependency is off fails by name.
	bad := append(append([]byte{}, frag...), "\n# CONFIG_NET is not set\nCONFIG_VETH=y\n"...)
	_, err = configure(t.Context(), tree, bad, func(string, string, int64, int64) {})
	if err == nil || !strings.Contains(err.Error(), "CONFIG_VETH=y") {
		t.Fatalf("dropped option error: %v", err)
	}
}
