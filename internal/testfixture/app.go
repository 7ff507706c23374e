package testfixture

import (
	"archive/tar"
	"bytes"
	"sort"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// AppImage is the busybox image made into an application image: files
// (path: content; a content starting with "->" is a symlink to the rest)
// in one more layer, and its config edited by config (Entrypoint, Cmd,
// Env ...).
func AppImage(tag string, files map[string]string, config func(*v1.Config)) (v1.Image, error) {
	img, err := BusyboxImage(tag)
	if err != nil {
		return nil, err
	}
	if len(files) > 0 {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		mt := time.Unix(1700000000, 0)
		names := make([]string, 0, len(files))
		for n := range files {
			names = append(names, n)
		}
		sort.Strings(names)
		dirs := map[string]bool{}
		for _, name := range names {
			for d := parentDir(name); d != "" && !dirs[d]; d = parentDir(d) {
				dirs[d] = true
				tw.WriteHeader(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt})
			}
			body := files[name]
			if len(body) > 2 && body[:2] == "->" {
				tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: body[2:], Mode: 0o777, ModTime: mt})
				continue
			}
			tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(body)), ModTime: mt})
			tw.Write([]byte(body))
		}
		tw.Close()
		b := buf.Bytes()
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
	if config != nil {
		config(&cf.Config)
	}
	return mutate.ConfigFile(img, cf)
}

func parentDir(p string) string {
	for i := len(p) - 1; i > 0; i-- {
		if p[i] == '/' {
			return p[:i]
		}
	}
	return ""
}
