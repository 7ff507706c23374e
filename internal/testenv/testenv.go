// Package testenv is what a test calls when a prerequisite (root, a host
// tool, a downloaded fixture) is missing. Outside CI the test skips, so a
// developer's laptop runs what it can; under CI=true (CI sets it) the test
// fails with the same reason, because a skipped test there is a test that
// never ran behind a green build.
//
// It is a plain package (not a _test.go file) so every package's tests can
// import it; nothing outside tests should.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// InCI reports whether the tests run under CI: exactly CI=true.
func InCI() bool { return os.Getenv("CI") == "true" }

// InstallHint is appended to every missing-prerequisite message.
const InstallHint = "scripts/install-deps.sh installs every test prerequisite"

// Skip skips the test outside CI and fails it under CI=true, with the
// same message either way. Use it for a missing prerequisite only; a
// deliberate opt-out (testing.Short) stays a plain t.Skip.
func Skip(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		t.Fatalf("%s [CI=true: a missing prerequisite fails the test instead of skipping it]", msg)
		return // a fake testing.TB's Fatalf returns
	}
	t.Skip(msg)
}

// RequireRoot skips (fails under CI) unless the test runs as root. why
// completes "needs root ...", e.g. "to create a network namespace".
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Skip(t, "needs root %s: run the tests as root (CI does)", why)
	}
}

// packages maps a tool to the Debian package that provides it.
var packages = map[string]string{
	"apt-cache":          "apt",
	"apt-get":            "apt",
	"busybox":            "busybox-static",
	"cpio":               "cpio",
	"curl":               "curl",
	"debootstrap":        "debootstrap",
	"debugfs":            "e2fsprogs",
	"dig":                "dnsutils",
	"dpkg-deb":           "dpkg",
	"dumpe2fs":           "e2fsprogs",
	"e2fsck":             "e2fsprogs",
	"ip":                 "iproute2",
	"mkfs.ext4":          "e2fsprogs",
	"nft":                "nftables",
	"qemu-system-x86_64": "qemu-system-x86",
	"resize2fs":          "e2fsprogs",
	"socat":              "socat",
	"sqlite3":            "sqlite3",
	"ss":                 "iproute2",
	"ssh":                "openssh-client",
	"systemd-analyze":    "systemd",
	"groupadd":           "passwd",
	"groupdel":           "passwd",
	"unshare":            "util-linux",
	"unzip":              "unzip",
}

// Package returns the Debian package providing tool, or "" if unknown.
func Package(tool string) string { return packages[tool] }

// missingTool is the message for a tool not on PATH.
func missingTool(tool string) string {
	if p := Package(tool); p != "" {
		return fmt.Sprintf("%s not installed (apt-get install %s; %s)", tool, p, InstallHint)
	}
	return fmt.Sprintf("%s not found on PATH (%s)", tool, InstallHint)
}

// RequireTool skips (fails under CI) unless every named tool is on PATH;
// the message names the first missing one and its apt package.
func RequireTool(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			Skip(t, "%s", missingTool(tool))
			return
		}
	}
}

// HaveTool is for a check that a test makes only when tool is there: it
// reports whether tool is on PATH. Under CI a missing tool fails the test
// instead (the check must run there); outside CI it is logged.
func HaveTool(t testing.TB, tool string) bool {
	t.Helper()
	if _, err := exec.LookPath(tool); err == nil {
		return true
	}
	msg := missingTool(tool)
	if InCI() {
		t.Fatalf("%s [CI=true: the check that needs it must run]", msg)
		return false
	}
	t.Logf("%s: a check is left out", msg)
	return false
}

// RequireFile skips (fails under CI) unless path exists; pkg is the apt
// package that installs it.
func RequireFile(t testing.TB, path, pkg string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		Skip(t, "%s missing (apt-get install %s; %s)", path, pkg, InstallHint)
	}
}
