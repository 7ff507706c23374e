package main

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestReadModulesDep(t *testing.T) {
	p := filepath.Join(t.TempDir(), "modules.dep")
	os.WriteFile(p, []byte("kernel/fs/fuse/virtiofs.ko: kernel/fs/fuse/fuse.ko\nkernel/fs/fuse/fuse.ko:\nkernel/net/9p/9pnet_virtio.ko.xz: kernel/net/9p/9pnet.ko.xz\n"), 0o644)
	deps, err := readModulesDep(p)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"virtiofs":     {"kernel/fs/fuse/virtiofs.ko", "kernel/fs/fuse/fuse.ko"},
		"fuse":         {"kernel/fs/fuse/fuse.ko"},
		"9pnet_virtio": {"kernel/net/9p/9pnet_virtio.ko.xz", "kernel/net/9p/9pnet.ko.xz"},
	}
	if !reflect.DeepEqual(deps, want) {
		t.Fatalf("got %v, want %v", deps, want)
	}
	if modName("a/b/snd-hda.ko.zst") != "snd_hda" {
		t.Fatal(modName("a/b/snd-hda.ko.zst"))
	}
}
