package kernelcat

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
)

// Kernel image formats recorded in Manifest.Format.
const (
	FormatELF     = "elf"
	FormatBzImage = "bzImage"
)

// maxVmlinux bounds decompression so a hostile payload cannot exhaust memory.
const maxVmlinux = 1 << 30

var elfMagic = []byte("\x7fELF")

// IsBzImage reports whether data carries the x86 boot protocol header.
func IsBzImage(data []byte) bool {
	return len(data) >= 0x250 && string(data[0x202:0x206]) == "HdrS"
}

// IsELF reports whether data starts with the ELF magic.
func IsELF(data []byte) bool { return bytes.HasPrefix(data, elfMagic) }

// compression magics the x86 kernel build uses for its payload.
var payloadMagics = []struct {
	name  string
	magic []byte
}{
	{"gzip", []byte{0x1f, 0x8b, 0x08}},
	{"xz", []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}},
	{"zstd", []byte{0x28, 0xb5, 0x2f, 0xfd}},
	{"lz4", []byte{0x02, 0x21, 0x4c, 0x18}},
}

// ExtractVmlinux returns the uncompressed ELF kernel inside a bzImage, which
// Firecracker needs (it cannot boot a bzImage). It reads payload_offset and
// payload_length from the boot header (protocol >= 2.08); for older headers,
// or when that payload does not decode, it scans for a known compression
// magic the way the kernel's scripts/extract-vmlinux does.
func ExtractVmlinux(bzImage []byte) ([]byte, error) {
	if !IsBzImage(bzImage) {
		return nil, errors.New("extract vmlinux: not a bzImage (no \"HdrS\" boot header at 0x202)")
	}
	var firstErr error
	if payload, ok := headerPayload(bzImage); ok {
		out, err := decompressPayload(payload, true)
		if err == nil {
			return out, nil
		}
		firstErr = err
	}
	for _, m := range payloadMagics {
		for off := 0; ; {
			i := bytes.Index(bzImage[off:], m.magic)
			if i < 0 {
				break
			}
			out, err := decompressPayload(bzImage[off+i:], false)
			if err == nil {
				return out, nil
			}
			if firstErr == nil {
				firstErr = err
			}
			off += i + 1
		}
	}
	if firstErr == nil {
		firstErr = errors.New("no gzip, xz, zstd or lz4 payload found")
	}
	return nil, fmt.Errorf("extract vmlinux: %w", firstErr)
}

func headerPayload(b []byte) ([]byte, bool) {
	version := binary.LittleEndian.Uint16(b[0x206:])
	if version < 0x208 {
		return nil, false
	}
	setupSects := int(b[0x1f1])
	if setupSects == 0 {
		setupSects = 4
	}
	start := (setupSects + 1) * 512
	off := int(binary.LittleEndian.Uint32(b[0x248:]))
	n := int(binary.LittleEndian.Uint32(b[0x24c:]))
	if off < 0 || n <= 0 || start+off+n > len(b) || start+off < 0 {
		return nil, false
	}
	return b[start+off : start+off+n], true
}

// decompressPayload decodes by magic. With strict set, p is exactly the
// header's payload: the kernel build appends the uncompressed size (4 bytes)
// after xz/zstd/lz4 streams, so a decoder that trips over trailing bytes is
// retried without them, and any other error fails. Without strict, p runs to
// the end of the file (the magic was found by scanning), so like the
// kernel's scripts/extract-vmlinux a decoder error after output that starts
// with the ELF magic is accepted.
func decompressPayload(p []byte, strict bool) ([]byte, error) {
	for _, m := range payloadMagics {
		if !bytes.HasPrefix(p, m.magic) {
			continue
		}
		out, err := decode(m.name, p, strict)
		if err != nil && strict && len(p) > 4 && m.name != "lz4" {
			if out2, err2 := decode(m.name, p[:len(p)-4], strict); err2 == nil {
				out, err = out2, nil
			}
		}
		if err != nil && !strict && IsELF(out) {
			err = nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s payload: %w", m.name, err)
		}
		if !IsELF(out) {
			return nil, fmt.Errorf("%s payload decompressed to %d bytes without ELF magic", m.name, len(out))
		}
		return out, nil
	}
	return nil, fmt.Errorf("unsupported payload compression (magic % x); supported: gzip, xz, zstd, lz4", p[:min(len(p), 6)])
}

func decode(kind string, p []byte, strict bool) ([]byte, error) {
	var r io.Reader
	switch kind {
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(p))
		if err != nil {
			return nil, err
		}
		zr.Multistream(false)
		r = zr
	case "xz":
		cfg := xz.ReaderConfig{SingleStream: true}
		xr, err := cfg.NewReader(bytes.NewReader(p))
		if err != nil {
			return nil, err
		}
		r = xr
	case "zstd":
		d, err := zstd.NewReader(bytes.NewReader(p), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(maxVmlinux))
		if err != nil {
			return nil, err
		}
		defer d.Close()
		r = d
	case "lz4":
		return decodeLZ4Legacy(p, strict)
	}
	return readLimited(r)
}

func readLimited(r io.Reader) ([]byte, error) {
	var buf bytes.Buffer
	n, err := io.Copy(&buf, io.LimitReader(r, maxVmlinux+1))
	if err != nil {
		return buf.Bytes(), err // partial output, for non-strict callers
	}
	if n > maxVmlinux {
		return nil, fmt.Errorf("decompressed size exceeds %d bytes", maxVmlinux)
	}
	return buf.Bytes(), nil
}

// decodeLZ4Legacy decodes the LZ4 "legacy" frame the kernel uses: a magic,
// then blocks of [le32 compressed size][data], each expanding to at most
// 8 MiB. The stream ends at the end of input or at the 4-byte size trailer;
// without strict, also at the first implausible block size.
func decodeLZ4Legacy(p []byte, strict bool) ([]byte, error) {
	const magic = 0x184C2102
	const blockMax = 8 << 20
	if len(p) < 4 || binary.LittleEndian.Uint32(p) != magic {
		return nil, errors.New("lz4: missing legacy frame magic")
	}
	p = p[4:]
	var out []byte
	block := make([]byte, blockMax)
	for len(p) >= 4 {
		size := binary.LittleEndian.Uint32(p)
		if size == magic { // concatenated legacy frames
			p = p[4:]
			continue
		}
		if int64(size) > int64(len(p)-4) || size > uint32(lz4.CompressBlockBound(blockMax)) {
			if len(out) > 0 && (len(p) == 4 || !strict) { // the size trailer, or data after the stream
				break
			}
			return nil, fmt.Errorf("lz4: block of %d bytes runs past the end of input (%d left)", size, len(p)-4)
		}
		n, err := lz4.UncompressBlock(p[4:4+size], block)
		if err != nil && !strict && len(out) > 0 {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("lz4: %w", err)
		}
		if len(out)+n > maxVmlinux {
			return nil, fmt.Errorf("decompressed size exceeds %d bytes", maxVmlinux)
		}
		out = append(out, block[:n]...)
		p = p[4+size:]
	}
	if len(out) == 0 {
		return nil, errors.New("lz4: no blocks")
	}
	return out, nil
}

// bzImageRelease reads the version string the boot header points at
// (kernel_version, protocol >= 2.00) and returns its first word, e.g.
// "6.1.0-56-cloud-amd64".
func bzImageRelease(b []byte) string {
	if !IsBzImage(b) {
		return ""
	}
	p := int(binary.LittleEndian.Uint16(b[0x20e:]))
	if p == 0 || p+0x200 >= len(b) {
		return ""
	}
	return firstWord(b[p+0x200:])
}

// elfRelease finds "Linux version <release> " in an uncompressed kernel.
func elfRelease(b []byte) string {
	const marker = "Linux version "
	off := 0
	for {
		i := bytes.Index(b[off:], []byte(marker))
		if i < 0 {
			return ""
		}
		r := firstWord(b[off+i+len(marker):])
		if r != "" && r[0] >= '0' && r[0] <= '9' {
			return r
		}
		off += i + 1
	}
}

func firstWord(b []byte) string {
	end := 0
	for end < len(b) && end < 128 && b[end] > ' ' && b[end] < 0x7f {
		end++
	}
	return string(b[:end])
}
