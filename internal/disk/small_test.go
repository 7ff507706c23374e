package disk

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestReadSmallFileFromExt4(t *testing.T) {
	needTools(t)
	ctx := context.Background()
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "banger"), 0o755)
	os.WriteFile(filepath.Join(src, "banger/small"), []byte("status 3\n"), 0o644)
	os.WriteFile(filepath.Join(src, "banger/big"), bytes.Repeat([]byte("x"), 1<<20), 0o644)
	img := filepath.Join(t.TempDir(), "cow.ext4")
	if err := MkfsExt4FromDir(ctx, src, img, 64<<20, "t"); err != nil {
		t.Fatal(err)
	}
	if b, err := ReadSmallFileFromExt4(ctx, img, "/banger/small", 64); err != nil || string(b) != "status 3\n" {
		t.Fatalf("%q %v", b, err)
	}
	if _, err := ReadSmallFileFromExt4(ctx, img, "/banger/big", 64); err == nil {
		t.Fatal("a 1 MiB file was read with a 64-byte limit")
	}
	if _, err := ReadSmallFileFromExt4(ctx, img, "/banger", 64); err == nil {
		t.Fatal("a directory was read")
	}
	if _, err := ReadSmallFileFromExt4(ctx, img, "/banger/none", 64); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}
