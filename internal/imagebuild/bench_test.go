package imagebuild

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"banger/internal/model"
)

// benchLayers synthesizes a ~100 MB, 5-layer image: per layer a few
// hundred files of mixed compressible and random content, like a distro's
// /usr, plus the busybox userland when it is installed.
func benchLayers(b *testing.B) [][]byte {
	b.Helper()
	rng := rand.New(rand.NewSource(1))
	var layers [][]byte
	if _, err := os.Stat("/bin/busybox"); err == nil {
		layers = append(layers, busyboxLayers(b)[0])
	}
	for l := 0; len(layers) < 5; l++ {
		var ents []ent
		for f := 0; f < 400; f++ {
			size := 10 << 10 * (1 + rng.Intn(9)) // 10–90 KiB, ~50 KiB mean
			body := make([]byte, size)
			if f%2 == 0 {
				rng.Read(body) // incompressible, like binaries
			} else {
				for i := range body {
					body[i] = "abcdefgh \n"[rng.Intn(10)]
				}
			}
			ents = append(ents, file(fmt.Sprintf("usr/lib/l%d/d%d/f%d", l, f%20, f), string(body)))
		}
		layers = append(layers, layerTar(b, ents...))
	}
	return layers
}

// BenchmarkPull measures Pull of a ~100 MB, 5-layer image from an
// in-process registry into rootfs.ext4 + work-seed.ext4: cold (empty
// cache), layers-cached (every blob cached, disks rebuilt) and cached (a
// same-digest re-pull, disks reused from the built cache). BANGER_BENCH_REF=host:port/repo:tag
// pulls that image instead (e.g. one pushed to a local docker-registry, to
// compare with skopeo copy + umoci unpack + mkfs.ext4 -d on the same image).
//
//	go test -run '^$' -bench BenchmarkPull -benchtime 3x ./internal/imagebuild
func BenchmarkPull(b *testing.B) {
	needE2fs(b)
	ref := os.Getenv("BANGER_BENCH_REF")
	if ref == "" {
		reg := startRegistry(b)
		ref = reg.push(b, "bench:1", makeImage(b, model.ImageConfig{}, "amd64", benchLayers(b)...))
	}
	key := testKey(b)
	ctx := context.Background()
	pull := func(b *testing.B, cache string) {
		work := filepath.Join(b.TempDir(), "img")
		res, err := Pull(ctx, ref, Options{WorkDir: work, CacheDir: cache, AuthorizedKey: key})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(res.SizeBytes)/(1<<20), "image-MiB")
		b.StopTimer()
		os.RemoveAll(work)
		b.StartTimer()
	}
	b.Run("cold", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			cache := filepath.Join(b.TempDir(), fmt.Sprint("cache", i))
			pull(b, cache)
		}
	})
	b.Run("layers-cached", func(b *testing.B) {
		cache := filepath.Join(b.TempDir(), "cache")
		b.StopTimer()
		pull(b, cache)
		b.StartTimer()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			os.RemoveAll(filepath.Join(cache, "built")) // rebuild from cached blobs
			b.StartTimer()
			pull(b, cache)
		}
	})
	b.Run("cached", func(b *testing.B) {
		cache := filepath.Join(b.TempDir(), "cache")
		b.StopTimer()
		pull(b, cache) // warm the cache
		b.StartTimer()
		for i := 0; i < b.N; i++ {
			pull(b, cache)
		}
	})
}
