package testfixture

import (
	"archive/tar"
	"bytes"
	"fmt"
	"math/rand"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// BigImage is the busybox image plus `layers` layers holding about totalMB
// of files (half random, half text-like, so compression behaves like real
// images): the benchmark image for pull + build comparisons.
func BigImage(layers, totalMB int) (v1.Image, error) {
	img, err := BusyboxImage("big")
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewSource(42))
	per := totalMB << 20 / layers
	mt := time.Unix(1700000000, 0)
	for l := 0; l < layers; l++ {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		dir := fmt.Sprintf("opt/layer%d/", l)
		tw.WriteHeader(&tar.Header{Name: dir, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt})
		for written, f := 0, 0; written < per; f++ {
			size := 4096 + rng.Intn(512<<10)
			body := make([]byte, size)
			if f%2 == 0 {
				rng.Read(body)
			} else {
				words := []byte("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor\n")
				for i := range body {
					body[i] = words[(i+f)%len(words)]
				}
			}
			tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("%sf%04d", dir, f), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(size), ModTime: mt})
			tw.Write(body)
			written += size
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
	return img, nil
}
