package scripts

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/imagecat"
	"banger/internal/testenv"
)

// TestFreshHost runs the README's install steps in a freshly
// debootstrapped Debian 12 root (minbase: no Go, no compiler, no curl) as a
// new user would on a fresh host, and checks they build bin/banger and
// bin/banger-init with the Go that scripts/go-toolchain.sh installs.
//
// The root is a chroot in a mount namespace of its own (its /proc, /dev and
// cache mounts vanish with it); it shares the host's network namespace and
// talks only to what the host is configured for: the apt sources (copied
// in) and the Go module proxy (the host's GOPROXY, written to the root's
// /etc/environment, where the script reads it). Cached by their inputs
// under $SMOKE_CACHE (as the smoke fixtures): the bare root (suite,
// variant, mirror), and the downloads a run makes (.debs, the toolchain
// zip by version, Go modules and build cache), so a rerun installs and
// builds everything again but downloads little.
func TestFreshHost(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the fresh-host install takes minutes")
	}
	testenv.RequireRoot(t, "to debootstrap and chroot")
	testenv.RequireTool(t, "debootstrap", "unshare", "chroot", "mount", "cp")
	mirror, err := imagecat.HostAptMirror()
	if err != nil {
		testenv.Skip(t, "no apt mirror for debootstrap: %v", err)
	}
	readme := readmeInstallSteps(t)
	goproxy := hostGOPROXY(t)

	cache := filepath.Join(os.Getenv("SMOKE_CACHE"))
	if cache == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			base = "/var/cache"
		}
		cache = filepath.Join(base, "banger-smoke")
	}
	bare := bareRoot(t, cache, mirror)

	// A fresh copy of the bare root for this run, on the same disk.
	work, err := os.MkdirTemp("/var/tmp", "banger-freshhost-")
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(work, "root")
	t.Cleanup(func() {
		if os.Getenv("FRESHHOST_KEEP") != "" && t.Failed() {
			t.Logf("kept %s (FRESHHOST_KEEP)", work)
			return
		}
		removeRoot(t, work)
	})
	if out, err := exec.Command("cp", "-a", "--reflink=auto", bare, root).CombinedOutput(); err != nil {
		t.Fatalf("copy the bare root: %v\n%s", err, out)
	}
	for _, p := range []string{"usr/local/go", "usr/bin/go", "usr/lib/go", "usr/local/bin/go", "usr/local/lib/banger-go"} {
		if _, err := os.Lstat(filepath.Join(root, p)); err == nil {
			t.Fatalf("the bare root already has /%s: not a host without Go", p)
		}
	}
	if m, _ := filepath.Glob(filepath.Join(root, "usr/lib/go-*")); len(m) > 0 {
		t.Fatalf("the bare root already has %v: not a host without Go", m)
	}

	// The host's configuration: apt sources (and their keys and network
	// settings), DNS, local CAs, the Go module proxy.
	for _, p := range []string{"etc/apt/sources.list", "etc/apt/sources.list.d", "etc/apt/apt.conf.d",
		"etc/apt/trusted.gpg", "etc/apt/trusted.gpg.d", "etc/apt/keyrings", "etc/resolv.conf", "etc/hosts",
		// The host's own CAs (a proxy's, say): ca-certificates, which the
		// install brings, adds them to the root's store as on the host.
		"usr/local/share/ca-certificates"} {
		copyHostPath(t, "/"+p, filepath.Join(root, p))
	}
	// Docker-image housekeeping would delete the cached .debs; not network.
	for _, m := range globs(t, filepath.Join(root, "etc/apt/apt.conf.d/docker-*")) {
		os.Remove(m)
	}
	writeFile(t, filepath.Join(root, "etc/environment"), "GOPROXY="+goproxy+"\n")
	// A chroot starts no services (as in any container build), and dpkg
	// need not fsync files a test root throws away.
	writeFile(t, filepath.Join(root, "usr/sbin/policy-rc.d"), "#!/bin/sh\nexit 101\n")
	os.Chmod(filepath.Join(root, "usr/sbin/policy-rc.d"), 0o755)
	writeFile(t, filepath.Join(root, "etc/dpkg/dpkg.cfg.d/banger-test-unsafe-io"), "force-unsafe-io\n")
	writeFile(t, filepath.Join(root, "etc/apt/apt.conf.d/99banger-test-keep-debs"), "Binary::apt::APT::Keep-Downloaded-Packages \"true\";\n")

	// The checkout, as a user would have it (no build outputs).
	src := filepath.Join(root, "src/banger")
	copyTree(t, "..", src)

	// Download caches, mounted over their places inside the namespace.
	dl := filepath.Join(cache, "freshhost-downloads")
	binds := map[string]string{
		"apt":       "var/cache/apt/archives",
		"toolchain": "var/cache/banger/go",
		"gomod":     "root/go/pkg/mod",
		"gocache":   "root/.cache/go-build",
	}
	var script strings.Builder
	script.WriteString("set -e\nmount -t proc proc \"$R/proc\"\nmount --rbind /dev \"$R/dev\"\nmount --rbind /sys \"$R/sys\"\n")
	for name, in := range binds {
		mkdir(t, filepath.Join(dl, name))
		mkdir(t, filepath.Join(root, in))
		fmt.Fprintf(&script, "mount --bind %s \"$R/%s\"\n", shellQuote(filepath.Join(dl, name)), in)
	}
	mkdir(t, filepath.Join(dl, "apt", "partial"))
	// What runs in the root: nothing that looks for Go finds one, then the
	// README's steps verbatim, then the checks (the last line printed is
	// the Go the Makefile chose).
	steps := "#!/bin/bash\nset -ex\n" +
		"if command -v go; then echo 'go is on PATH before the install' >&2; exit 3; fi\n" +
		"cd /src/banger\n" + readme +
		"\ntest -x bin/banger && test -x bin/banger-init\nbin/banger --help >/dev/null\n" +
		"readlink -f \"$(printf 'p:\\n\\t@echo $(GO)\\n' | make -s -f Makefile -f - p)\"\n"
	writeFile(t, filepath.Join(root, "freshhost-steps.sh"), steps)
	fmt.Fprintf(&script, "exec chroot \"$R\" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 CI=%s PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin /bin/bash /freshhost-steps.sh\n",
		shellQuote(os.Getenv("CI")))

	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nice", "-n", "10", "unshare", "--mount", "--propagation", "private", "bash", "-c", script.String())
	cmd.Env = append(os.Environ(), "R="+root)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err = cmd.Run()
	t.Logf("install steps in the fresh root took %s", time.Since(start).Round(time.Second))
	if err != nil {
		t.Fatalf("the README's install steps failed in a fresh Debian 12 root: %v\n%s", err, tail(out.String(), 80))
	}
	for _, b := range []string{"bin/banger", "bin/banger-init"} {
		if st, err := os.Stat(filepath.Join(src, b)); err != nil || st.Mode()&0o111 == 0 {
			t.Errorf("%s not built: %v", b, err)
		}
	}
	// The build used the toolchain the script installed, not some other Go.
	want := "/usr/local/lib/banger-go/go" + goModVersion(t) + "/bin/go"
	if got := lastLine(out.String()); got != want {
		t.Errorf("the Makefile's Go is %q, want %q (installed by scripts/go-toolchain.sh)\n%s", got, want, tail(out.String(), 30))
	}
	if !strings.Contains(out.String(), "go-toolchain: installed Go "+goModVersion(t)) {
		t.Errorf("no toolchain install reported\n%s", tail(out.String(), 30))
	}
}

// readmeInstallSteps is the README's "## Install" section's first sh block.
func readmeInstallSteps(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)\n## Install\n.*?```sh\n(.*?)```").FindSubmatch(data)
	if m == nil {
		t.Fatal("README.md has no sh block under ## Install")
	}
	return string(m[1])
}

// hostGOPROXY is the Go module proxy this host's Go is configured for.
func hostGOPROXY(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOPROXY").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		testenv.Skip(t, "no GOPROXY from `go env GOPROXY` (%v): the fresh root needs the host's Go module proxy", err)
	}
	return strings.TrimSpace(string(out))
}

// bareRoot returns the cached bare Debian 12 minbase root for mirror,
// debootstrapping it first if need be (into a temp dir, renamed into place).
func bareRoot(t *testing.T, cache, mirror string) string {
	t.Helper()
	e := imagecat.Entry{Name: "freshhost", Source: imagecat.Source{Type: imagecat.SourceDebootstrap, Suite: "bookworm", Variant: "minbase", Mirror: mirror}}
	inputs := fmt.Sprintf("freshhost v1\nsuite=%s\nvariant=%s\nmirror=%s\n", e.Source.Suite, e.Source.Variant, mirror)
	sum := sha256.Sum256([]byte(inputs))
	dir := filepath.Join(cache, "freshhost-root-"+hex.EncodeToString(sum[:8]))
	if _, err := os.Stat(filepath.Join(dir, "etc/os-release")); err == nil {
		return dir
	}
	mkdir(t, cache)
	tmp, err := os.MkdirTemp(cache, ".freshhost-root-")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("debootstrapping a bare Debian 12 root into %s (cached by its inputs)", dir)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	if err := imagecat.BuildDebootstrapTree(ctx, e, "", filepath.Join(tmp, "root"), nil); err != nil {
		os.RemoveAll(tmp)
		testenv.Skip(t, "debootstrap the fresh root: %v", err)
	}
	writeFile(t, filepath.Join(tmp, "root.origin"), inputs)
	if err := os.Rename(filepath.Join(tmp, "root"), dir); err != nil && !os.IsExist(err) {
		t.Fatal(err)
	}
	os.Rename(filepath.Join(tmp, "root.origin"), dir+".origin")
	os.RemoveAll(tmp)
	return dir
}

// removeRoot deletes a run's root, refusing while anything is mounted
// under it (a mount there would lead the removal into the caches).
func removeRoot(t *testing.T, dir string) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Errorf("keep %s: %v", dir, err)
		return
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			t.Errorf("%s is mounted: leaving %s in place", f[4], dir)
			return
		}
	}
	os.RemoveAll(dir)
}

func copyHostPath(t *testing.T, from, to string) {
	t.Helper()
	if _, err := os.Stat(from); err != nil {
		return
	}
	os.RemoveAll(to)
	mkdir(t, filepath.Dir(to))
	if out, err := exec.Command("cp", "-aL", from, to).CombinedOutput(); err != nil {
		t.Fatalf("copy %s into the root: %v\n%s", from, err, out)
	}
}

// copyTree copies the checkout at from to to, leaving out .git and build
// outputs (bin/).
func copyTree(t *testing.T, from, to string) {
	t.Helper()
	abs, err := filepath.Abs(from)
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(abs, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(abs, p)
		switch rel {
		case ".git": // a directory, or a file in a worktree
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		case "bin", ".cache", "smoke/.work":
			return filepath.SkipDir
		}
		dst := filepath.Join(to, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(dst, 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(l, dst)
		case d.Type().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(dst, data, info.Mode().Perm())
		}
		return nil
	})
	if err != nil {
		t.Fatalf("copy the checkout: %v", err)
	}
}

func globs(t *testing.T, pattern string) []string {
	m, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func mkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	mkdir(t, filepath.Dir(path))
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// shellQuote quotes s for sh.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
