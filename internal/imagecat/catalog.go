// Package imagecat knows which images banger can pull by name: an embedded
// catalog, optionally extended by a --image-catalog file with the same
// schema, and the debootstrap builder for catalog images made from Debian
// packages. Turning a tree into ext4 belongs to internal/imagebuild.
//
// Schema:
//
//	{"images": [{"name": "…", "description": "…", "kernel": "<kernel name>", "init": "auto"|"banger"|"image",
//	  "source": {"type": "oci", "ref": "127.0.0.1:5000/busybox:1"}
//	          | {"type": "debootstrap", "suite": "bookworm", "variant": "minbase",
//	             "packages": ["…"], "mirror": "", "files": {"etc/x.conf": "…"}}
//	          | {"type": "bundle", "url": "http(s)://… or file://…", "sha256": "…"}}]}
//
// An empty debootstrap mirror means "the host's own apt mirror"
// (HostAptMirror); banger never hard-codes one.
package imagecat

import (
	"banger/internal/catalog"
	_ "embed"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path"
	"regexp"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"banger/internal/guestproto"
	"banger/internal/kernelcat"
)

// Source says how to obtain an image. Which fields apply depends on Type.
type Source struct {
	Type     string   `json:"type"`
	Ref      string   `json:"ref,omitempty"`      // oci
	Suite    string   `json:"suite,omitempty"`    // debootstrap
	Variant  string   `json:"variant,omitempty"`  // debootstrap
	Packages []string `json:"packages,omitempty"` // debootstrap --include
	Mirror   string   `json:"mirror,omitempty"`   // debootstrap; empty: host's apt mirror
	// Files are written into a debootstrap tree after the packages are
	// installed (path relative to the root, content): configuration the
	// packages need to work in a VM, e.g. Docker's data root on the work
	// disk. At most maxFiles, each at most maxFileSize bytes.
	Files  map[string]string `json:"files,omitempty"`
	URL    string            `json:"url,omitempty"`    // bundle
	SHA256 string            `json:"sha256,omitempty"` // bundle
}

// Entry is one pullable image. Kernel names a kernel catalog entry; empty
// means the daemon's default kernel.
type Entry struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	Kernel      string `json:"kernel,omitempty"`
	Source      Source `json:"source"`
	// Init is the default init mode of VMs from this image (auto, banger,
	// image); "" is auto.
	Init string `json:"init,omitempty"`
}

// Catalog is the JSON document {"images": [...]}.
type Catalog struct {
	Images []Entry `json:"images"`
}

// DefaultImage is built from Debian packages only, so a host that can reach
// its own Debian mirror can create a VM without any other download site.
const DefaultImage = "debian-bookworm"

// Source types.
const (
	SourceOCI         = "oci"
	SourceDebootstrap = "debootstrap"
	SourceBundle      = "bundle"
)

//go:embed catalog.json
var embeddedCatalog []byte

// LoadEmbedded parses the catalog compiled into the binary.
func LoadEmbedded() (*Catalog, error) {
	c, err := parse(embeddedCatalog)
	if err != nil {
		return nil, fmt.Errorf("embedded image catalog: %w", err)
	}
	return c, nil
}

// LoadFile parses and validates a catalog file (the --image-catalog flag).
func LoadFile(path string) (*Catalog, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read image catalog: %w", err)
	}
	c, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("image catalog %s: %w", path, err)
	}
	return c, nil
}

func parse(data []byte) (*Catalog, error) {
	var c Catalog
	if err := catalog.Decode(data, &c, "{\"images\": [{\"name\", \"kernel\", \"source\": {\"type\": \"oci\"|\"debootstrap\"|\"bundle\", …}}]}"); err != nil {
		return nil, err
	}
	if err := catalog.Check(c.Images, "image", ValidateEntry); err != nil {
		return nil, err
	}
	return &c, nil
}

// EntryName makes Entry a catalog.Named.
func (e Entry) EntryName() string { return e.Name }

// ValidateName checks an image catalog name: lowercase letters, digits,
// '-', '.', '_', at most 63, starting and ending with a letter or digit (the
// kernel name rule; '.' and '_' allow versions like "alpine-3.20").
func ValidateName(name string) error { return catalog.ValidateName("image", name) }

var (
	debPackageRE = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)
	suiteRE      = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]*$`)
	sha256RE     = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// Variants debootstrap accepts ("" means debootstrap's default).
var debootstrapVariants = map[string]bool{"": true, "minbase": true, "buildd": true, "fakechroot": true}

// ValidateEntry checks an entry's name, kernel and source; errors name the
// bad value.
func ValidateEntry(e Entry) error {
	if err := ValidateName(e.Name); err != nil {
		return err
	}
	if e.Kernel != "" {
		if err := kernelcat.ValidateName(e.Kernel); err != nil {
			return fmt.Errorf("image %q: %w", e.Name, err)
		}
	}
	if e.Init != "" {
		if err := guestproto.ValidateInitMode(e.Init); err != nil {
			return fmt.Errorf("image %q: %w", e.Name, err)
		}
	}
	s := e.Source
	switch s.Type {
	case SourceOCI:
		if s.Ref == "" {
			return fmt.Errorf("image %q: oci source needs \"ref\"", e.Name)
		}
		if _, err := name.ParseReference(s.Ref); err != nil {
			return fmt.Errorf("image %q: oci ref %q: %w", e.Name, s.Ref, err)
		}
		if s.Suite != "" || s.URL != "" || len(s.Packages) > 0 || s.Mirror != "" || len(s.Files) > 0 {
			return fmt.Errorf("image %q: oci source takes only \"ref\"", e.Name)
		}
	case SourceDebootstrap:
		if !suiteRE.MatchString(s.Suite) {
			return fmt.Errorf("image %q: debootstrap source needs a suite such as \"bookworm\", got %q", e.Name, s.Suite)
		}
		if !debootstrapVariants[s.Variant] {
			return fmt.Errorf("image %q: debootstrap variant %q is not one of minbase, buildd, fakechroot", e.Name, s.Variant)
		}
		for _, p := range s.Packages {
			if !debPackageRE.MatchString(p) {
				return fmt.Errorf("image %q: %q is not a Debian package name", e.Name, p)
			}
		}
		if s.Mirror != "" {
			if err := checkURL(s.Mirror); err != nil {
				return fmt.Errorf("image %q: mirror: %w", e.Name, err)
			}
		}
		if err := validateFiles(s.Files); err != nil {
			return fmt.Errorf("image %q: %w", e.Name, err)
		}
		if s.Ref != "" || s.URL != "" || s.SHA256 != "" {
			return fmt.Errorf("image %q: debootstrap source takes suite, variant, packages, mirror and files only", e.Name)
		}
	case SourceBundle:
		if err := checkURL(s.URL); err != nil {
			return fmt.Errorf("image %q: bundle: %w", e.Name, err)
		}
		if s.SHA256 != "" && !sha256RE.MatchString(s.SHA256) {
			return fmt.Errorf("image %q: sha256 %q is not 64 lowercase hex digits", e.Name, s.SHA256)
		}
		if s.Ref != "" || s.Suite != "" || len(s.Packages) > 0 || len(s.Files) > 0 {
			return fmt.Errorf("image %q: bundle source takes url and sha256 only", e.Name)
		}
	default:
		return fmt.Errorf("image %q: unknown source type %q (want \"oci\", \"debootstrap\" or \"bundle\")", e.Name, s.Type)
	}
	return nil
}

// Limits of a debootstrap source's files: configuration, not payload.
const (
	maxFiles    = 32
	maxFileSize = 64 << 10
)

// validateFiles checks a debootstrap source's files: clean relative paths
// inside the tree (no "..", no leading "/"), bounded in number and size.
func validateFiles(files map[string]string) error {
	if len(files) > maxFiles {
		return fmt.Errorf("%d files, at most %d", len(files), maxFiles)
	}
	for p, content := range files {
		if p == "" || path.IsAbs(p) || path.Clean(p) != p || p == "." || p == ".." || strings.HasPrefix(p, "../") {
			return fmt.Errorf("file path %q must be a clean path relative to the image root, such as \"etc/docker/daemon.json\"", p)
		}
		if len(content) > maxFileSize {
			return fmt.Errorf("file %q: %d bytes, at most %d", p, len(content), maxFileSize)
		}
	}
	return nil
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || s == "" {
		return fmt.Errorf("invalid url %q", s)
	}
	switch u.Scheme {
	case "http", "https":
		if u.Host == "" {
			return fmt.Errorf("url %q has no host", s)
		}
	case "file":
		if u.Path == "" {
			return fmt.Errorf("url %q has no path", s)
		}
	default:
		return fmt.Errorf("url %q: scheme must be http, https or file", s)
	}
	return nil
}

// Merge returns a new catalog: c's entries with override's added, an
// override entry replacing c's entry of the same name in place.
func (c *Catalog) Merge(override *Catalog) *Catalog {
	out := &Catalog{Images: catalog.Merge(c.entries(), override.entries())}
	// Copy the package lists so the result shares no slice with its inputs.
	for i := range out.Images {
		out.Images[i].Source.Packages = append([]string(nil), out.Images[i].Source.Packages...)
		out.Images[i].Source.Files = maps.Clone(out.Images[i].Source.Files)
	}
	return out
}

func (c *Catalog) entries() []Entry {
	if c == nil {
		return nil
	}
	return c.Images
}

// Lookup finds an entry by exact name.
func (c *Catalog) Lookup(name string) (Entry, bool) { return catalog.Lookup(c.entries(), name) }

// Names lists entry names, sorted, for "unknown image; available: …" errors.
func (c *Catalog) Names() []string { return catalog.Names(c.entries()) }
