package kernelcat

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
)

func compressGzip(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func compressXZ(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	w, err := xz.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func compressZstd(t *testing.T, b []byte) []byte {
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(b, nil)
}

// compressLZ4Legacy writes the kernel's LZ4 legacy frame: magic, then
// [le32 size][block] for each 8 MiB of input.
func compressLZ4Legacy(t *testing.T, b []byte) []byte {
	out := binary.LittleEndian.AppendUint32(nil, 0x184C2102)
	for off := 0; off < len(b); off += 8 << 20 {
		chunk := b[off:min(off+8<<20, len(b))]
		dst := make([]byte, lz4.CompressBlockBound(len(chunk)))
		n, err := lz4.CompressBlock(chunk, dst, nil)
		if err != nil || n == 0 {
			t.Fatalf("lz4 compress: n=%d err=%v", n, err)
		}
		out = binary.LittleEndian.AppendUint32(out, uint32(n))
		out = append(out, dst[:n]...)
	}
	return out
}

func TestExtractVmlinuxSynthetic(t *testing.T) {
	small := fakeVmlinux("9.9.9-synth", 1<<20)
	// 9 MiB so the lz4 payload spans two 8 MiB legacy blocks.
	big := fakeVmlinux("9.9.9-synth", 9<<20)
	cases := []struct {
		name     string
		compress func(*testing.T, []byte) []byte
		vmlinux  []byte
	}{
		{"gzip", compressGzip, small},
		{"xz", compressXZ, small},
		{"zstd", compressZstd, small},
		{"lz4", compressLZ4Legacy, big},
	}
	for _, c := range cases {
		vmlinux := c.vmlinux
		for _, hdr := range []struct {
			name    string
			version uint16
		}{{"header-payload", 0x20f}, {"scan-old-protocol", 0x206}} {
			t.Run(c.name+"/"+hdr.name, func(t *testing.T) {
				bz := fakeBzImage(c.compress(t, vmlinux), "9.9.9-synth", hdr.version, len(vmlinux))
				if !IsBzImage(bz) || IsELF(bz) {
					t.Fatal("fixture is not detected as a bzImage")
				}
				got, err := ExtractVmlinux(bz)
				if err != nil {
					t.Fatalf("ExtractVmlinux: %v", err)
				}
				if !bytes.Equal(got, vmlinux) {
					t.Fatalf("extracted %d bytes, differ from the %d-byte original", len(got), len(vmlinux))
				}
				if r := bzImageRelease(bz); r != "9.9.9-synth" {
					t.Fatalf("bzImageRelease = %q", r)
				}
				if r := elfRelease(got); r != "9.9.9-synth" {
					t.Fatalf("elfRelease = %q", r)
				}
			})
		}
	}
}

func TestExtractVmlinuxErrors(t *testing.T) {
	notELF := bytes.Repeat([]byte("not an elf "), 1000)
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"not a bzImage", fakeVmlinux("1", 4096), "not a bzImage"},
		{"payload is not ELF", fakeBzImage(compressGzip(t, notELF), "1", 0x20f, -1), "without ELF magic"},
		{"unsupported compression", fakeBzImage([]byte("BZh91AY&SY garbage that is bzip2-ish"), "1", 0x20f, -1), "unsupported payload compression"},
		{"truncated xz", fakeBzImage(compressXZ(t, fakeVmlinux("1", 1<<20))[:2000], "1", 0x20f, -1), "xz payload"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ExtractVmlinux(c.data)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to mention %q", err, c.want)
			}
		})
	}
}

// TestExtractVmlinuxDebian runs on the real Debian cloud kernel, whose
// payload is LZ4 legacy with the size trailer.
func TestExtractVmlinuxDebian(t *testing.T) {
	root := debianKernelRoot(t)
	kernels, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(kernels) != 1 {
		t.Fatalf("want one vmlinuz in the package, got %v", kernels)
	}
	bz, err := os.ReadFile(kernels[0])
	if err != nil {
		t.Fatal(err)
	}
	release := strings.TrimPrefix(filepath.Base(kernels[0]), "vmlinuz-")
	if r := bzImageRelease(bz); r != release {
		t.Fatalf("bzImageRelease = %q, want %q", r, release)
	}
	vm, err := ExtractVmlinux(bz)
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.NewFile(bytes.NewReader(vm))
	if err != nil {
		t.Fatalf("extracted vmlinux does not parse as ELF: %v", err)
	}
	if f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC {
		t.Fatalf("vmlinux machine %v type %v, want x86-64 executable", f.Machine, f.Type)
	}
	if len(f.Progs) == 0 {
		t.Fatal("vmlinux has no program headers to load")
	}
	if r := elfRelease(vm); r != release {
		t.Fatalf("elfRelease = %q, want %q", r, release)
	}
	t.Logf("%s: bzImage %d bytes -> vmlinux %d bytes", release, len(bz), len(vm))
}
