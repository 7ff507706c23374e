// Package scripts holds the tests of the shell scripts beside them (the
// directory has no Go code of its own).
package scripts

import (
	"archive/zip"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"testing"

	"banger/internal/testenv"
)

// goModVersion is go.mod's toolchain (else go) version, as 1.X.Y.
func goModVersion(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`(?m)^toolchain go(\S+)`).FindSubmatch(data); m != nil {
		return string(m[1])
	}
	m := regexp.MustCompile(`(?m)^go (\S+)`).FindSubmatch(data)
	if m == nil {
		t.Fatal("go.mod has no go line")
	}
	return string(m[1])
}

// TestToolchainPinned: the version go.mod asks for has a pinned checksum,
// so a fresh host can install it (bumping go.mod without the pin fails here,
// not on a user's host).
func TestToolchainPinned(t *testing.T) {
	script, err := os.ReadFile("go-toolchain.sh")
	if err != nil {
		t.Fatal(err)
	}
	v := goModVersion(t)
	for _, arch := range []string{"amd64"} {
		key := regexp.QuoteMeta("[go" + v + ".linux-" + arch + "]=h1:")
		if !regexp.MustCompile(`(?m)^\s*` + key + `[A-Za-z0-9+/]{43}=$`).Match(script) {
			t.Errorf("go-toolchain.sh pins no h1: for go%s.linux-%s (go.mod wants %s): add the Sum that `go mod download -json golang.org/toolchain@v0.0.1-go%s.linux-%s` prints", v, arch, v, v, arch)
		}
	}
}

// hash1 is golang.org/x/mod/sumdb/dirhash.Hash1, the checksum database's
// h1: hash, written out here as the reference for the script's.
func hash1(files map[string]string) string {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		fmt.Fprintf(h, "%x  %s\n", sha256.Sum256([]byte(files[n])), n)
	}
	return "h1:" + base64.StdEncoding.EncodeToString(h.Sum(nil))
}

func writeZip(t *testing.T, path string, files map[string]string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	zw := zip.NewWriter(f)
	for n, body := range files {
		w, err := zw.Create(n) // no modes, as in module zips
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, body)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

// fakeToolchain is a toolchain module's file set: a go that reports
// version v, and names whose byte order differs from a locale's.
func fakeToolchain(mod, v string) map[string]string {
	return map[string]string{
		mod + "/bin/go":                     "#!/bin/sh\necho go" + v + "\n",
		mod + "/bin/gofmt":                  "#!/bin/sh\n",
		mod + "/pkg/tool/linux_amd64/vet":   "#!/bin/sh\n",
		mod + "/VERSION":                    "go" + v + "\n",
		mod + "/src/B.go":                   "package b\n",
		mod + "/src/a-b.go":                 "package a\n",
		mod + "/src/a/b.go":                 "package a\n",
		mod + "/src/with space/x.go":        "package x\n",
		mod + "/lib/time/zoneinfo-empty.md": "",
	}
}

// runScript sources go-toolchain.sh and runs body with env; it returns
// the combined output and the error.
func runScript(t *testing.T, env []string, body string) (string, error) {
	t.Helper()
	cmd := exec.Command("bash", "-c", "source ./go-toolchain.sh\n"+body)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestToolchainInstall runs the script's install over a file:// GOPROXY
// holding a fake toolchain module: it installs and verifies it, reuses the
// cached zip, and refuses a tampered zip and one with files outside the
// module's directory, installing nothing then.
func TestToolchainInstall(t *testing.T) {
	testenv.RequireTool(t, "bash", "curl", "unzip", "sha256sum", "base64")
	if runtime.GOARCH != "amd64" {
		t.Skip("the fake module is linux-amd64") // not a missing prerequisite
	}
	const v = "1.99.1"
	mod := "golang.org/toolchain@v0.0.1-go" + v + ".linux-amd64"
	files := fakeToolchain(mod, v)
	pin := hash1(files)

	dir := t.TempDir()
	proxy := filepath.Join(dir, "proxy")
	zipPath := filepath.Join(proxy, "golang.org/toolchain/@v/v0.0.1-go"+v+".linux-amd64.zip")
	writeZip(t, zipPath, files)
	home, cache := filepath.Join(dir, "home"), filepath.Join(dir, "cache")
	env := []string{"BANGER_GO_HOME=" + home, "BANGER_GO_CACHE=" + cache,
		"GOPROXY=file://" + filepath.Join(dir, "missing") + ",file://" + proxy}
	install := fmt.Sprintf("PINNED[go%s.linux-amd64]=%s\ninstall_go %s\n", v, pin, v)

	out, err := runScript(t, env, install)
	if err != nil {
		t.Fatalf("install: %v\n%s", err, out)
	}
	gobin := filepath.Join(home, "go"+v, "bin", "go")
	if got, err := exec.Command(gobin).Output(); err != nil || string(got) != "go"+v+"\n" {
		t.Fatalf("installed go: %q, %v (want it executable, printing go%s)\n%s", got, err, v, out)
	}
	if st, err := os.Stat(filepath.Join(home, "go"+v, "pkg/tool/linux_amd64/vet")); err != nil || st.Mode()&0o111 == 0 {
		t.Errorf("pkg/tool not made executable: %v %v", st.Mode(), err)
	}
	if _, err := os.Stat(filepath.Join(cache, "go"+v+".linux-amd64.zip")); err != nil {
		t.Errorf("zip not kept in the cache: %v", err)
	}

	// The cached zip serves a reinstall with no proxy at all (and is
	// verified again: the install succeeds only with the right pin).
	os.RemoveAll(filepath.Join(home, "go"+v))
	noProxy := append(env[:2:2], "GOPROXY=off")
	if out, err := runScript(t, noProxy, install); err != nil {
		t.Fatalf("reinstall from the cache: %v\n%s", err, out)
	}
	if _, err := os.Stat(gobin); err != nil {
		t.Fatalf("reinstall from the cache: %v", err)
	}
	wrongPin := fmt.Sprintf("PINNED[go%s.linux-amd64]=%s\ninstall_go %s\n", v, hash1(map[string]string{"x": "y"}), v)
	os.RemoveAll(filepath.Join(home, "go"+v))
	if out, err := runScript(t, noProxy, wrongPin); err == nil || !strings.Contains(out, "want "+hash1(map[string]string{"x": "y"})) {
		t.Fatalf("a zip not matching the pin was accepted: %v\n%s", err, out)
	}

	// Tampered (one byte of one file) and escaping zips from the proxy.
	for name, bad := range map[string]map[string]string{
		"tampered": func() map[string]string {
			m := fakeToolchain(mod, v)
			m[mod+"/src/B.go"] = "package c\n"
			return m
		}(),
		"escaping": func() map[string]string {
			m := fakeToolchain(mod, v)
			m[mod+"/../../evil"] = "x"
			return m
		}(),
	} {
		os.RemoveAll(home)
		os.RemoveAll(cache)
		writeZip(t, zipPath, bad)
		out, err := runScript(t, env, install)
		if err == nil || !strings.Contains(out, "failed verification; nothing installed") {
			t.Errorf("%s zip: want refused, got %v\n%s", name, err, out)
		}
		if _, err := os.Stat(gobin); err == nil {
			t.Errorf("%s zip: %s installed anyway", name, gobin)
		}
		if _, err := os.Stat(filepath.Join(dir, "evil")); err == nil {
			t.Errorf("%s zip: wrote outside the install dir", name)
		}
	}
}

// TestToolchainFind: --find prints the bin dir of a Go new enough for
// go.mod and never installs; an older one does not count.
func TestToolchainFind(t *testing.T) {
	testenv.RequireTool(t, "bash")
	v := goModVersion(t)
	dir := t.TempDir()
	for name, ver := range map[string]string{"old": "1.19.8", "new": v} {
		bin := filepath.Join(dir, name, "bin")
		os.MkdirAll(bin, 0o755)
		os.WriteFile(filepath.Join(bin, "go"), []byte("#!/bin/sh\necho go"+ver+"\n"), 0o755)
	}
	body := "find_go " + v
	home := "BANGER_GO_HOME=" + filepath.Join(dir, "none")
	out, err := runScript(t, []string{"PATH=" + filepath.Join(dir, "new", "bin") + ":/usr/bin:/bin", home}, body)
	if err != nil || strings.TrimSpace(lastLine(out)) != filepath.Join(dir, "new", "bin") {
		t.Errorf("find_go with go%s on PATH: %q, %v", v, out, err)
	}
	// The old one on PATH is reported and passed over (the host's
	// /usr/local/go may still be found after it: it is not asserted).
	out, _ = runScript(t, []string{"PATH=" + filepath.Join(dir, "old", "bin") + ":/usr/bin:/bin", home}, body)
	if !strings.Contains(out, "is Go 1.19.8, older than go.mod's "+v) || strings.Contains(out, filepath.Join(dir, "old", "bin")+"\n") {
		t.Errorf("find_go with go1.19.8 on PATH: %q", out)
	}
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	return s[strings.LastIndex(s, "\n")+1:]
}
