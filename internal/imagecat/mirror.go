package imagecat

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// aptSource is one deb line or one deb822 paragraph, flattened.
type aptSource struct {
	uris       []string
	suites     []string
	components []string
	file       string
}

// debianSuites are the suite names and aliases of the Debian archive. A
// source whose suite is not one of these (nor the host's own codename, when
// the host is Debian) is a third-party repository, not a Debian mirror.
var debianSuites = map[string]bool{
	"stable": true, "testing": true, "unstable": true, "sid": true, "experimental": true,
	"oldstable": true, "oldoldstable": true,
	"stretch": true, "buster": true, "bullseye": true, "bookworm": true, "trixie": true, "forky": true, "duke": true,
}

// HostAptMirror returns the URI of the main Debian archive in the host's apt
// sources (/etc/apt/sources.list, sources.list.d/*.list and *.sources), so
// banger builds Debian images from the mirror the host already trusts and
// never hard-codes one. It prefers a source with a plain suite ("bookworm")
// over -updates/-backports, and never returns a security archive.
func HostAptMirror() (string, error) { return hostAptMirrorFrom("/") }

func hostAptMirrorFrom(root string) (string, error) {
	srcs, err := readAptSources(root)
	if err != nil {
		return "", err
	}
	codename := hostDebianCodename(root)
	isDebian := func(suite string) bool {
		base, _, _ := strings.Cut(suite, "/")
		if i := strings.IndexByte(base, '-'); i >= 0 {
			base = base[:i]
		}
		return debianSuites[base] || (codename != "" && base == codename)
	}
	security := func(suite string) bool {
		return strings.HasSuffix(suite, "-security") || strings.HasSuffix(suite, "/updates")
	}
	plain := func(suite string) bool { return !strings.ContainsAny(suite, "-/") }
	var fallback string
	for _, s := range srcs {
		if !contains(s.components, "main") {
			continue
		}
		for _, suite := range s.suites {
			if !isDebian(suite) || security(suite) {
				continue
			}
			for _, u := range s.uris {
				if !usableURI(u) {
					continue
				}
				if plain(suite) {
					return u, nil
				}
				if fallback == "" {
					fallback = u
				}
			}
		}
	}
	if fallback != "" {
		return fallback, nil
	}
	files := make([]string, 0, len(srcs))
	for _, s := range srcs {
		files = append(files, s.file)
	}
	return "", fmt.Errorf("no Debian archive mirror (a deb source with a Debian suite and the main component) in the host's apt sources %v; set the image's \"mirror\" or banger's mirror config", uniq(files))
}

// usableURI: debootstrap fetches over http(s) and file only.
func usableURI(u string) bool {
	p, err := url.Parse(u)
	return err == nil && (p.Scheme == "http" || p.Scheme == "https" || p.Scheme == "file")
}

// hostDebianCodename reads VERSION_CODENAME from os-release when ID=debian.
func hostDebianCodename(root string) string {
	data, err := os.ReadFile(filepath.Join(root, "etc", "os-release"))
	if err != nil {
		return ""
	}
	var id, code string
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		v = strings.Trim(v, `"'`)
		switch k {
		case "ID":
			id = v
		case "VERSION_CODENAME":
			code = v
		}
	}
	if id != "debian" {
		return ""
	}
	return code
}

// readAptSources returns sources in apt's reading order: sources.list, then
// sources.list.d entries sorted by name.
func readAptSources(root string) ([]aptSource, error) {
	etc := filepath.Join(root, "etc", "apt")
	var out []aptSource
	main := filepath.Join(etc, "sources.list")
	if s, err := parseOneLine(main); err == nil {
		out = append(out, s...)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	ents, err := os.ReadDir(filepath.Join(etc, "sources.list.d"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	for _, n := range names {
		p := filepath.Join(etc, "sources.list.d", n)
		var s []aptSource
		switch {
		case strings.HasSuffix(n, ".list"):
			s, err = parseOneLine(p)
		case strings.HasSuffix(n, ".sources"):
			s, err = parseDeb822(p)
		default:
			continue // apt ignores other names too (*.disabled, *.save …)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, s...)
	}
	return out, nil
}

// parseOneLine reads "deb [opts] uri suite [component...]" lines.
func parseOneLine(path string) ([]aptSource, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []aptSource
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) < 3 || fields[0] != "deb" {
			continue
		}
		fields = fields[1:]
		if strings.HasPrefix(fields[0], "[") {
			// Options may contain spaces: skip to the field ending in ']'.
			i := 0
			for i < len(fields) && !strings.HasSuffix(fields[i], "]") {
				i++
			}
			fields = fields[min(i+1, len(fields)):]
		}
		if len(fields) < 2 {
			continue
		}
		out = append(out, aptSource{uris: fields[:1], suites: fields[1:2], components: fields[2:], file: path})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return out, nil
}

// parseDeb822 reads paragraphs of Types/URIs/Suites/Components fields.
func parseDeb822(path string) ([]aptSource, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []aptSource
	flush := func(p map[string]string) {
		if len(p) == 0 {
			return
		}
		if !contains(strings.Fields(p["types"]), "deb") || strings.EqualFold(strings.TrimSpace(p["enabled"]), "no") {
			return
		}
		out = append(out, aptSource{
			uris:       strings.Fields(p["uris"]),
			suites:     strings.Fields(p["suites"]),
			components: strings.Fields(p["components"]),
			file:       path,
		})
	}
	para := map[string]string{}
	last := ""
	for _, line := range strings.Split(string(data), "\n") {
		switch {
		case strings.HasPrefix(line, "#"):
			continue
		case strings.TrimSpace(line) == "":
			flush(para)
			para, last = map[string]string{}, ""
		case line[0] == ' ' || line[0] == '\t':
			if last != "" {
				para[last] += " " + strings.TrimSpace(line)
			}
		default:
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			last = strings.ToLower(strings.TrimSpace(k))
			para[last] = strings.TrimSpace(v)
		}
	}
	flush(para)
	return out, nil
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

func uniq(xs []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range xs {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}
