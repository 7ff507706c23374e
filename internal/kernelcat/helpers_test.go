package kernelcat

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"banger/internal/testenv"
)

// fakeModule builds a minimal ELF64 relocatable object whose .modinfo
// section carries name= and depends=, the parts of a .ko banger reads.
func fakeModule(name string, depends ...string) []byte {
	modinfo := []byte("license=GPL\x00name=" + name + "\x00depends=" + strings.Join(depends, ",") + "\x00vermagic=9.9.9-test\x00")
	shstr := []byte("\x00.modinfo\x00.shstrtab\x00")
	const ehsize, shentsize = 64, 64
	modOff := uint64(ehsize)
	strOff := modOff + uint64(len(modinfo))
	shOff := (strOff + uint64(len(shstr)) + 7) &^ 7
	var b bytes.Buffer
	h := elf.Header64{
		Type: uint16(elf.ET_REL), Machine: uint16(elf.EM_X86_64), Version: 1,
		Shoff: shOff, Ehsize: ehsize, Shentsize: shentsize, Shnum: 3, Shstrndx: 2,
	}
	copy(h.Ident[:], "\x7fELF")
	h.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	h.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	h.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	binary.Write(&b, binary.LittleEndian, h)
	b.Write(modinfo)
	b.Write(shstr)
	for uint64(b.Len()) < shOff {
		b.WriteByte(0)
	}
	secs := []elf.Section64{
		{},
		{Name: 1, Type: uint32(elf.SHT_PROGBITS), Flags: uint64(elf.SHF_ALLOC), Off: modOff, Size: uint64(len(modinfo)), Addralign: 1},
		{Name: 10, Type: uint32(elf.SHT_STRTAB), Off: strOff, Size: uint64(len(shstr)), Addralign: 1},
	}
	for _, s := range secs {
		binary.Write(&b, binary.LittleEndian, s)
	}
	return b.Bytes()
}

// fakeVmlinux is an ELF-looking blob with a Linux banner, enough for format
// and release detection. size pads it (with a non-trivial pattern).
func fakeVmlinux(release string, size int) []byte {
	b := make([]byte, 0, size)
	b = append(b, fakeModule("vmlinux")...)
	b = append(b, []byte("Linux version "+release+" (test@banger) #1 SMP\x00")...)
	var x uint32 = 2463534242
	for len(b) < size {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b = append(b, byte(x&0x0f)+'a') // compressible but not trivially
	}
	return b
}

// fakeBzImage wraps a compressed payload in a minimal x86 boot header:
// setup_sects=1, "HdrS", protocol version, kernel_version string,
// payload_offset/length. The kernel build appends the uncompressed size.
func fakeBzImage(payload []byte, release string, version uint16, appendSize int) []byte {
	const setupSects = 1
	pm := (setupSects + 1) * 512
	b := make([]byte, pm)
	b[0x1f1] = setupSects
	copy(b[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(b[0x206:], version)
	verOff := 0x300
	copy(b[verOff:], release+" (test@banger) #1\x00")
	binary.LittleEndian.PutUint16(b[0x20e:], uint16(verOff-0x200))
	prefix := []byte("decompressor stub code.....")
	p := append([]byte{}, payload...)
	if appendSize >= 0 {
		p = binary.LittleEndian.AppendUint32(p, uint32(appendSize))
	}
	binary.LittleEndian.PutUint32(b[0x248:], uint32(len(prefix)))
	binary.LittleEndian.PutUint32(b[0x24c:], uint32(len(p)))
	b = append(b, prefix...)
	b = append(b, p...)
	b = append(b, []byte("trailing data after the payload")...)
	return b
}

func tarGz(t *testing.T, files map[string][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(files[n])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(files[n])
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

// slowServer serves blobs by path in small chunks with pauses, so a pull is
// in flight long enough for readers and cancellations to overlap it.
type slowServer struct {
	*httptest.Server
	mu    sync.Mutex
	blobs map[string][]byte
	gets  atomic.Int64
	chunk int
	pause time.Duration
}

func newSlowServer(t *testing.T) *slowServer {
	s := &slowServer{blobs: map[string][]byte{}, chunk: 32 << 10, pause: 2 * time.Millisecond}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.gets.Add(1)
		s.mu.Lock()
		b, ok := s.blobs[r.URL.Path]
		s.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		for off := 0; off < len(b); off += s.chunk {
			end := min(off+s.chunk, len(b))
			if _, err := w.Write(b[off:end]); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(s.pause):
			}
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *slowServer) put(path string, b []byte) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.blobs[path] = b
	return s.URL + path
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// listing returns every path under dir (relative), to compare before/after.
func listing(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		out = append(out, rel)
		return nil
	})
	sort.Strings(out)
	return out
}

const fixtureDir = "/tmp/banger-fixtures/kernelcat"

// debianKernelRoot downloads the real Debian cloud kernel package once into
// /tmp/banger-fixtures/kernelcat and unpacks it there; it returns the
// unpacked root. Skips (fails under CI) only when apt cannot download it.
func debianKernelRoot(t *testing.T) string {
	t.Helper()
	root := filepath.Join(fixtureDir, "root")
	if _, err := os.Stat(filepath.Join(root, "boot")); err == nil {
		return root
	}
	testenv.RequireTool(t, "apt-cache", "apt-get", "dpkg-deb")
	if err := os.MkdirAll(fixtureDir, 0o755); err != nil {
		t.Fatal(err)
	}
	pkg, err := resolveDebPackage(t.Context(), "linux-image-cloud-amd64")
	if err != nil {
		testenv.Skip(t, "apt cannot resolve linux-image-cloud-amd64 here: %v", err)
	}
	dl, err := os.MkdirTemp(fixtureDir, "dl-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dl)
	cmd := exec.Command("apt-get", "download", "-q", pkg)
	cmd.Dir = dl
	if out, err := cmd.CombinedOutput(); err != nil {
		testenv.Skip(t, "apt-get download %s failed (no package mirror reachable?): %v\n%s", pkg, err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(dl, "*.deb"))
	if len(debs) != 1 {
		t.Fatalf("apt-get download gave %v", debs)
	}
	tmp := filepath.Join(dl, "root")
	if out, err := exec.Command("dpkg-deb", "-x", debs[0], tmp).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -x: %v\n%s", err, out)
	}
	if err := os.Rename(tmp, root); err != nil && !os.IsExist(err) {
		if _, statErr := os.Stat(filepath.Join(root, "boot")); statErr != nil {
			t.Fatal(err)
		}
	}
	return root
}
