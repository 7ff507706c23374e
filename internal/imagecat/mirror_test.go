package imagecat

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/testenv"
)

// fakeRoot writes files (relative path -> content) under a temp root. Every
// host in these fixtures is fake (*.example).
func fakeRoot(t *testing.T, files map[string]string) string {
	root := t.TempDir()
	for rel, body := range files {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

const debianOSRelease = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_CODENAME=bookworm\n"

func TestHostAptMirror(t *testing.T) {
	cases := []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"deb822 like a Debian 12 host", map[string]string{
			"etc/os-release": debianOSRelease,
			"etc/apt/sources.list.d/debian.sources": `Types: deb
# a comment
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main
`,
			"etc/apt/sources.list.d/cloud.list.disabled": "deb http://thirdparty.example/apt cloud-sdk main\n",
		}, "http://mirror.example/debian"},
		{"one-line, security first, options with spaces", map[string]string{
			"etc/apt/sources.list": `# deb http://commented.example/debian bookworm main
deb http://security.example/debian-security bookworm-security main
deb-src http://src.example/debian bookworm main
deb [ arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg ] http://mirror.example/debian bookworm main contrib # trailing
`}, "http://mirror.example/debian"},
		{"plain suite preferred over an earlier -updates", map[string]string{
			"etc/apt/sources.list":                "deb http://updates.example/debian bookworm-updates main\n",
			"etc/apt/sources.list.d/main.sources": "Types: deb deb-src\nURIs: http://mirror.example/debian\nSuites: bookworm\nComponents: main\n",
		}, "http://mirror.example/debian"},
		{"only -updates: used as fallback", map[string]string{
			"etc/apt/sources.list": "deb http://updates.example/debian bookworm-updates main\ndeb http://security.example/debian-security bookworm/updates main\n",
		}, "http://updates.example/debian"},
		{"third-party repos and a disabled paragraph are skipped", map[string]string{
			"etc/apt/sources.list.d/a-nodesource.sources": "Types: deb\nURIs: https://node.example/deb\nSuites: nodistro\nComponents: main\n",
			"etc/apt/sources.list.d/b-cloud.list":         "deb https://cloud.example/apt cloud-sdk-bookworm main\n",
			"etc/apt/sources.list.d/c-debian.sources": "Types: deb\nURIs: http://disabled.example/debian\nSuites: bookworm\nComponents: main\nEnabled: no\n\n" +
				"types: deb\nuris:\n http://mirror.example/debian\n  http://second.example/debian\nsuites: stable\ncomponents: main contrib\n",
		}, "http://mirror.example/debian"},
		{"mirror+file and cdrom URIs are not usable by debootstrap", map[string]string{
			"etc/apt/sources.list": "deb mirror+file:/etc/apt/mirrors.txt bookworm main\ndeb cdrom:[Debian]/ bookworm main\ndeb file:/srv/debian bookworm main\n",
		}, "file:/srv/debian"},
		{"host codename not yet known to banger", map[string]string{
			"etc/os-release":       "ID=debian\nVERSION_CODENAME=futurename\n",
			"etc/apt/sources.list": "deb http://cloud.example/apt cloud-sdk main\ndeb http://mirror.example/debian futurename main\n",
		}, "http://mirror.example/debian"},
		{"component main required", map[string]string{
			"etc/apt/sources.list": "deb http://nonfree.example/debian bookworm non-free\ndeb http://mirror.example/debian bookworm main\n",
		}, "http://mirror.example/debian"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := hostAptMirrorFrom(fakeRoot(t, c.files))
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Fatalf("mirror = %q, want %q", got, c.want)
			}
		})
	}
}

func TestHostAptMirrorNone(t *testing.T) {
	for name, files := range map[string]map[string]string{
		"no sources at all": {"etc/os-release": debianOSRelease},
		"only deb-src and security": {
			"etc/apt/sources.list": "deb-src http://mirror.example/debian bookworm main\ndeb http://security.example/debian-security bookworm-security main\n",
		},
		"an Ubuntu host (no Debian suite)": {
			"etc/os-release":       "ID=ubuntu\nVERSION_CODENAME=noble\n",
			"etc/apt/sources.list": "deb http://archive.example/ubuntu noble main\n",
		},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := hostAptMirrorFrom(fakeRoot(t, files))
			if err == nil || !strings.Contains(err.Error(), "no Debian archive mirror") || !strings.Contains(err.Error(), "mirror") {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

// TestHostAptMirrorThisHost: the real host's config yields a usable URI
// (not logged: mirror names stay out of test output).
func TestHostAptMirrorThisHost(t *testing.T) {
	m, err := HostAptMirror()
	if err != nil {
		testenv.Skip(t, "this host names no Debian mirror in its apt sources: %v", err)
	}
	if !usableURI(m) {
		t.Fatalf("HostAptMirror returned an unusable URI")
	}
}
