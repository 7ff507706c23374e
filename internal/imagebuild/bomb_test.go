package imagebuild

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/model"
)

// gnuSparseBomb is a GNU sparse ('S') entry whose map is all hole and
// whose real size is realSize: a few hundred bytes of tar that expand to
// realSize bytes when extracted naively.
func gnuSparseBomb(name string, realSize int64) []byte {
	var h [512]byte
	copy(h[0:], name)
	copy(h[100:], "0000644\x00")
	copy(h[108:], "0000000\x00")
	copy(h[116:], "0000000\x00")
	copy(h[124:], "00000000000\x00") // stored data: none
	copy(h[136:], "14000000000\x00")
	h[156] = tar.TypeGNUSparse
	copy(h[257:], "ustar  \x00") // GNU magic and version
	// Real size in GNU base-256 (0x80, then big-endian): it does not fit
	// the 11 octal digits.
	h[483] = 0x80
	for i := 0; i < 8; i++ {
		h[494-i] = byte(realSize >> (8 * i))
	}
	for i := 148; i < 156; i++ {
		h[i] = ' '
	}
	sum := 0
	for _, b := range h {
		sum += int(b)
	}
	copy(h[148:], fmt.Sprintf("%06o\x00 ", sum))
	return append(h[:], make([]byte, 1024)...) // end-of-archive blocks
}

func TestApplyLayerRefusesSparseBomb(t *testing.T) {
	root := t.TempDir()
	bomb := gnuSparseBomb("bomb", 1<<40)
	// The stream really is what it claims: archive/tar reads a 1 TiB file.
	tr := tar.NewReader(bytes.NewReader(bomb))
	hdr, err := tr.Next()
	if err != nil || hdr.Size != 1<<40 {
		t.Fatalf("fixture: %v %+v", err, hdr)
	}
	err = ApplyLayer(root, bytes.NewReader(bomb))
	if !errors.Is(err, errTooBig) || !strings.Contains(err.Error(), `"bomb"`) {
		t.Fatalf("1 TiB sparse entry: %v", err)
	}
	if names, _ := os.ReadDir(root); len(names) != 0 {
		t.Errorf("the refused entry left %v", names)
	}
}

func TestApplyLayerBudgetAcrossLayers(t *testing.T) {
	root := t.TempDir()
	bud := &budget{Limits: Limits{MaxBytes: 10, MaxEntries: 3}}
	if err := applyLayerBudget(root, bytes.NewReader(layerTar(t, file("a", "12345"))), bud); err != nil {
		t.Fatal(err)
	}
	// The second layer's bytes count on top of the first's.
	err := applyLayerBudget(root, bytes.NewReader(layerTar(t, file("b", "123456"))), bud)
	if !errors.Is(err, errTooBig) || !strings.Contains(err.Error(), `"b"`) {
		t.Fatalf("11 bytes over a 10-byte budget: %v", err)
	}
	bud = &budget{Limits: Limits{MaxBytes: 1 << 20, MaxEntries: 3}}
	err = applyLayerBudget(t.TempDir(), bytes.NewReader(layerTar(t, dir("d"), file("d/1", ""), file("d/2", ""), file("d/3", ""))), bud)
	if !errors.Is(err, errTooBig) || !strings.Contains(err.Error(), "more than 3 entries") {
		t.Fatalf("4 entries over a budget of 3: %v", err)
	}
}

// A pulled image whose layer declares a 1 TiB sparse file fails with a
// clear error and leaves nothing in the build dir.
func TestPullRefusesSparseBomb(t *testing.T) {
	needE2fs(t)
	reg := startRegistry(t)
	img := makeImage(t, model.ImageConfig{}, "amd64", layerTar(t, file("ok", "fine")), gnuSparseBomb("var/bomb", 1<<40))
	ref := reg.push(t, "bomb:1", img)
	work := filepath.Join(t.TempDir(), "build")
	res, err := Pull(context.Background(), ref, Options{WorkDir: work, AuthorizedKey: testKey(t)})
	if err == nil || res != nil || !errors.Is(err, errTooBig) || !strings.Contains(err.Error(), "var/bomb") {
		t.Fatalf("tar bomb pulled: %+v %v", res, err)
	}
	if got := dirNames(t, work); len(got) != 0 {
		t.Fatalf("refused pull left %v in the work dir", got)
	}
}
