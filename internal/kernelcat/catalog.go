// Package kernelcat knows which guest kernels banger can pull (an embedded
// catalog, optionally extended by a user file) and turns a catalog entry into
// a kernel directory under kernels/<name>/ with an atomic manifest.json.
//
// Publication is by construction atomic: everything is built in a sibling
// temp dir (kernels/.tmp-<name>-<random>/) and renamed into place with
// RENAME_NOREPLACE, so a reader sees either no kernel dir or a complete one.
package kernelcat

import (
	"banger/internal/catalog"
	_ "embed"
	"fmt"
	"net/url"
	"os"
	"regexp"
)

// Source says where a kernel comes from.
//
//	{"type": "deb", "package": "linux-image-cloud-amd64"}
//	{"type": "url", "url": "https://…/vmlinux", "sha256": "…"}
//	{"type": "debsrc", "package": "linux-source-6.1", "config": "microvm-6.1.config"}
//
// A debsrc source is built by banger from the source package and one of
// its embedded config fragments (internal/kernelcat/configs; see debsrc.go).
//
// Import records Type "import" with URL set to the file:// path it came from.
type Source struct {
	Type    string `json:"type"`
	Package string `json:"package,omitempty"`
	URL     string `json:"url,omitempty"`
	SHA256  string `json:"sha256,omitempty"`
	Config  string `json:"config,omitempty"`
}

// Entry is one pullable kernel.
type Entry struct {
	Name        string `json:"name"`
	Arch        string `json:"arch,omitempty"`
	Description string `json:"description,omitempty"`
	Source      Source `json:"source"`
}

// Catalog is the JSON document {"kernels": [...]}: the embedded catalog and
// --kernel-catalog override files share this schema.
type Catalog struct {
	Kernels []Entry `json:"kernels"`
}

// DefaultKernel is the catalog entry used when nothing else is asked for. It
// is a deb source so any Debian host can pull it through its own apt config.
const DefaultKernel = "debian-cloud-amd64"

// Source types.
const (
	SourceDeb    = "deb"
	SourceURL    = "url"
	SourceImport = "import"
	SourceDebSrc = "debsrc"
)

//go:embed catalog.json
var embeddedCatalog []byte

// LoadEmbedded parses the catalog compiled into the binary.
func LoadEmbedded() (*Catalog, error) {
	c, err := parse(embeddedCatalog)
	if err != nil {
		return nil, fmt.Errorf("embedded kernel catalog: %w", err)
	}
	return c, nil
}

// LoadFile parses and validates a catalog file (the --kernel-catalog flag).
func LoadFile(path string) (*Catalog, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read kernel catalog: %w", err)
	}
	c, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("kernel catalog %s: %w", path, err)
	}
	return c, nil
}

func parse(data []byte) (*Catalog, error) {
	var c Catalog
	if err := catalog.Decode(data, &c, "{\"kernels\": [{\"name\", \"source\": {\"type\": \"deb\"|\"url\"|\"debsrc\", …}}]}"); err != nil {
		return nil, err
	}
	if err := catalog.Check(c.Kernels, "kernel", ValidateEntry); err != nil {
		return nil, err
	}
	return &c, nil
}

// EntryName makes Entry a catalog.Named.
func (e Entry) EntryName() string { return e.Name }

// ValidateName checks a kernel name. The rule is model.ValidateVMName's
// (lowercase letters, digits, '-', at most 63) plus '.' and '_', because
// kernel names like "firecracker-6.1" carry versions. A name must start with
// a letter or digit: names beginning with '.' are banger's temp dirs.
func ValidateName(name string) error { return catalog.ValidateName("kernel", name) }

var (
	debPackageRE = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)
	sha256RE     = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// ValidateEntry checks an entry's name and source. A url source may omit
// sha256 here; Fetch refuses such an entry unless the URL is file:// or
// loopback.
func ValidateEntry(e Entry) error {
	if err := ValidateName(e.Name); err != nil {
		return err
	}
	return validateSource(e.Name, e.Source)
}

func validateSource(name string, s Source) error {
	switch s.Type {
	case SourceDeb:
		if !debPackageRE.MatchString(s.Package) {
			return fmt.Errorf("kernel %q: deb source needs a Debian package name in \"package\", got %q", name, s.Package)
		}
		if s.URL != "" || s.SHA256 != "" || s.Config != "" {
			return fmt.Errorf("kernel %q: deb source takes only \"package\" (url/sha256/config given)", name)
		}
	case SourceDebSrc:
		if !debPackageRE.MatchString(s.Package) {
			return fmt.Errorf("kernel %q: debsrc source needs a Debian source package name in \"package\" (like linux-source-6.1), got %q", name, s.Package)
		}
		if _, err := ConfigFragment(s.Config); err != nil {
			return fmt.Errorf("kernel %q: debsrc \"config\": %w", name, err)
		}
		if s.URL != "" || s.SHA256 != "" {
			return fmt.Errorf("kernel %q: debsrc source takes only \"package\" and \"config\" (url/sha256 given)", name)
		}
	case SourceURL:
		u, err := url.Parse(s.URL)
		if err != nil || s.URL == "" {
			return fmt.Errorf("kernel %q: url source needs a valid \"url\", got %q", name, s.URL)
		}
		switch u.Scheme {
		case "http", "https":
			if u.Host == "" {
				return fmt.Errorf("kernel %q: url %q has no host", name, s.URL)
			}
		case "file":
			if u.Path == "" {
				return fmt.Errorf("kernel %q: url %q has no path", name, s.URL)
			}
		default:
			return fmt.Errorf("kernel %q: url %q: scheme must be http, https or file", name, s.URL)
		}
		if s.SHA256 != "" && !sha256RE.MatchString(s.SHA256) {
			return fmt.Errorf("kernel %q: sha256 %q is not 64 lowercase hex digits", name, s.SHA256)
		}
		if s.Package != "" {
			return fmt.Errorf("kernel %q: url source does not take \"package\" (got %q)", name, s.Package)
		}
		if s.Config != "" {
			return fmt.Errorf("kernel %q: url source does not take \"config\" (got %q)", name, s.Config)
		}
	default:
		return fmt.Errorf("kernel %q: unknown source type %q (want \"deb\", \"debsrc\" or \"url\")", name, s.Type)
	}
	return nil
}

// Merge returns a new catalog: c's entries with override's added, an override
// entry replacing c's entry of the same name in place. Neither input changes.
func (c *Catalog) Merge(override *Catalog) *Catalog {
	out := &Catalog{Kernels: catalog.Merge(c.entries(), override.entries())}
	return out
}

func (c *Catalog) entries() []Entry {
	if c == nil {
		return nil
	}
	return c.Kernels
}

// Lookup finds an entry by exact name.
func (c *Catalog) Lookup(name string) (Entry, bool) { return catalog.Lookup(c.entries(), name) }

// Names lists entry names, sorted, for "unknown kernel; available: …" errors.
func (c *Catalog) Names() []string { return catalog.Names(c.entries()) }
