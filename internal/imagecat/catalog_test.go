package imagecat

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"banger/internal/kernelcat"
)

func TestEmbeddedCatalog(t *testing.T) {
	c, err := LoadEmbedded()
	if err != nil {
		t.Fatal(err)
	}
	def, ok := c.Lookup(DefaultImage)
	if !ok {
		t.Fatalf("default image %q missing; have %v", DefaultImage, c.Names())
	}
	if def.Source.Type != SourceDebootstrap || def.Source.Suite != "bookworm" || def.Source.Variant != "minbase" || def.Source.Mirror != "" {
		t.Fatalf("default image source = %+v (must use the host's mirror: empty \"mirror\")", def.Source)
	}
	if def.Kernel != kernelcat.DefaultKernel {
		t.Fatalf("default image kernel = %q, want %q", def.Kernel, kernelcat.DefaultKernel)
	}
	sd, ok := c.Lookup("debian-bookworm-systemd")
	if !ok || sd.Init != "image" || !slices.Contains(sd.Source.Packages, "systemd-sysv") {
		t.Fatalf("debian-bookworm-systemd = %+v, want init image and systemd-sysv", sd)
	}
	// Docker's data root must be on the work disk (ext4): overlay2 cannot
	// nest on the overlay root, and dockerd would fall back to a slow
	// driver; apparmor loads Docker's default container profile.
	dk, ok := c.Lookup("debian-bookworm-docker")
	if !ok || !slices.Contains(dk.Source.Packages, "docker.io") || !slices.Contains(dk.Source.Packages, "apparmor") ||
		!strings.Contains(dk.Source.Files["etc/docker/daemon.json"], `"data-root": "/root/`) {
		t.Fatalf("debian-bookworm-docker = %+v, want docker.io, apparmor and a data root under /root", dk)
	}
	kc, err := kernelcat.LoadEmbedded()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range c.Images {
		if _, ok := kc.Lookup(e.Kernel); !ok {
			t.Errorf("image %q names kernel %q, which the kernel catalog lacks", e.Name, e.Kernel)
		}
	}
}

func writeCatalog(t *testing.T, body string) string {
	p := filepath.Join(t.TempDir(), "images.json")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadFileRejects(t *testing.T) {
	cases := []struct{ name, body, want string }{
		{"bad name", `{"images":[{"name":"My_Image!","source":{"type":"oci","ref":"busybox"}}]}`, `"My_Image!"`},
		{"bad kernel", `{"images":[{"name":"i","kernel":"K K","source":{"type":"oci","ref":"busybox"}}]}`, `"K K"`},
		{"unknown type", `{"images":[{"name":"i","source":{"type":"iso"}}]}`, `"iso"`},
		{"oci without ref", `{"images":[{"name":"i","source":{"type":"oci"}}]}`, `needs "ref"`},
		{"oci bad ref", `{"images":[{"name":"i","source":{"type":"oci","ref":"UPPER/Case::x"}}]}`, `"UPPER/Case::x"`},
		{"oci url ref", `{"images":[{"name":"i","source":{"type":"oci","ref":"http://127.0.0.1:5000/x"}}]}`, `"http://127.0.0.1:5000/x"`},
		{"debootstrap no suite", `{"images":[{"name":"i","source":{"type":"debootstrap"}}]}`, `got ""`},
		{"debootstrap variant", `{"images":[{"name":"i","source":{"type":"debootstrap","suite":"bookworm","variant":"huge"}}]}`, `"huge"`},
		{"debootstrap package", `{"images":[{"name":"i","source":{"type":"debootstrap","suite":"bookworm","packages":["ok-pkg","--evil"]}}]}`, `"--evil"`},
		{"debootstrap mirror", `{"images":[{"name":"i","source":{"type":"debootstrap","suite":"bookworm","mirror":"ftp://mirror.example/debian"}}]}`, `"ftp://mirror.example/debian"`},
		{"bundle sha", `{"images":[{"name":"i","source":{"type":"bundle","url":"http://127.0.0.1/b.tar","sha256":"zz"}}]}`, `"zz"`},
		{"bundle url", `{"images":[{"name":"i","source":{"type":"bundle","url":"gopher://x/b"}}]}`, `"gopher://x/b"`},
		{"duplicate", `{"images":[{"name":"i","source":{"type":"oci","ref":"a"}},{"name":"i","source":{"type":"oci","ref":"b"}}]}`, `duplicate image name "i"`},
		{"bad init", `{"images":[{"name":"i","init":"systemd","source":{"type":"oci","ref":"a"}}]}`, `"systemd"`},
		{"files escape", `{"images":[{"name":"i","source":{"type":"debootstrap","suite":"bookworm","files":{"../etc/passwd":"x"}}}]}`, `"../etc/passwd"`},
		{"files absolute", `{"images":[{"name":"i","source":{"type":"debootstrap","suite":"bookworm","files":{"/etc/x":"x"}}}]}`, `"/etc/x"`},
		{"files unclean", `{"images":[{"name":"i","source":{"type":"debootstrap","suite":"bookworm","files":{"etc//x":"x"}}}]}`, `"etc//x"`},
		{"files on oci", `{"images":[{"name":"i","source":{"type":"oci","ref":"a","files":{"etc/x":"x"}}}]}`, `takes only "ref"`},
		{"unknown field", `{"images":[{"name":"i","source":{"type":"oci","ref":"a","tag":"x"}}]}`, `"tag"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := LoadFile(writeCatalog(t, c.body))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to contain %s", err, c.want)
			}
		})
	}
}

func TestMergeLookupNames(t *testing.T) {
	base, err := LoadEmbedded()
	if err != nil {
		t.Fatal(err)
	}
	before := base.Names()
	over, err := LoadFile(writeCatalog(t, `{"images":[
		{"name":"busybox","description":"local","kernel":"k1","source":{"type":"oci","ref":"127.0.0.1:5000/busybox:1"}},
		{"name":"`+DefaultImage+`","source":{"type":"debootstrap","suite":"bookworm","packages":["less"],"mirror":"http://mirror.example/debian"}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	m := base.Merge(over)
	if len(m.Images) != len(base.Images)+1 {
		t.Fatalf("merged %v", m.Names())
	}
	if e, _ := m.Lookup(DefaultImage); e.Source.Mirror != "http://mirror.example/debian" {
		t.Fatalf("override did not replace the default: %+v", e)
	}
	if e, ok := m.Lookup("busybox"); !ok || e.Kernel != "k1" {
		t.Fatalf("busybox = %+v %v", e, ok)
	}
	// Mutating the merged catalog must not reach the inputs.
	e := m.Images[len(m.Images)-1]
	e.Source.Packages = append(e.Source.Packages[:0], "changed")
	if ov, _ := over.Lookup(DefaultImage); ov.Source.Packages[0] != "less" {
		t.Fatal("Merge shares package slices with its input")
	}
	if !reflect.DeepEqual(base.Names(), before) {
		t.Fatal("Merge changed its receiver")
	}
	if _, ok := m.Lookup("absent"); ok {
		t.Fatal("Lookup found a missing name")
	}
}
