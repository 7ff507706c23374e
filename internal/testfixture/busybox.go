// Package testfixture builds the images banger's end-to-end tests and
// smoke suite boot: a busybox-static userland as a real OCI image (from
// Debian's busybox-static package on the host), and an in-process OCI
// registry (go-containerregistry's) that counts manifest fetches.
package testfixture

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// BusyboxPath is where Debian's busybox-static installs the binary.
var BusyboxPath = "/bin/busybox"

// BusyboxImage returns a two-layer linux/amd64 image: busybox with a
// symlink per applet, and a small /etc + /root layer. tag goes into
// /etc/banger-fixture so images built with different tags differ.
func BusyboxImage(tag string) (v1.Image, error) {
	bin, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w (apt-get install busybox-static)", BusyboxPath, err)
	}
	out, err := exec.Command(BusyboxPath, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("busybox --list: %w", err)
	}
	mt := time.Unix(1700000000, 0)
	var l1 bytes.Buffer
	tw := tar.NewWriter(&l1)
	for _, d := range []string{"bin", "sbin", "usr", "usr/bin", "usr/sbin"} {
		tw.WriteHeader(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt})
	}
	tw.WriteHeader(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bin)), ModTime: mt})
	tw.Write(bin)
	for _, a := range strings.Fields(string(out)) {
		if a == "busybox" {
			continue
		}
		tw.WriteHeader(&tar.Header{Name: "bin/" + a, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777, ModTime: mt})
	}
	tw.Close()

	var l2 bytes.Buffer
	tw = tar.NewWriter(&l2)
	for _, d := range []string{"etc", "root", "tmp", "proc", "sys", "dev", "run", "var", "home"} {
		mode := int64(0o755)
		if d == "tmp" {
			mode = 0o1777
		}
		if d == "root" {
			mode = 0o700
		}
		tw.WriteHeader(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: mode, ModTime: mt})
	}
	files := map[string]string{
		"etc/passwd":         "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
		"etc/group":          "root:x:0:\nnogroup:x:65534:\n",
		"etc/banger-fixture": tag + "\n",
		"root/.profile":      "export PS1='\\h:\\w# '\n",
	}
	for name, body := range files {
		tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body)), ModTime: mt})
		tw.Write([]byte(body))
	}
	tw.Close()

	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	for _, b := range [][]byte{l1.Bytes(), l2.Bytes()} {
		b := b
		layer, err := tarball.LayerFromOpener(func() (ioReadCloser, error) { return nopCloser(b), nil }, tarball.WithMediaType(types.OCILayer))
		if err != nil {
			return nil, err
		}
		if img, err = mutate.AppendLayers(img, layer); err != nil {
			return nil, err
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Cmd = []string{"/bin/sh"}
	cf.Config.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cf.Config.WorkingDir = "/root"
	return mutate.ConfigFile(img, cf)
}

// WriteLayout writes img as an OCI image layout directory.
func WriteLayout(dir string, img v1.Image) error {
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	return p.AppendImage(img)
}
