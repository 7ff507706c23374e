package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"time"

	"banger/api"
	"banger/client"
	"banger/internal/daemon"
)

// docDirs are the packages whose doc comments describe the wire types.
var docDirs = []string{"api", "internal/model"}

// streamItems names what a stream method's connection carries after its
// answer (the daemon's table only says that it streams).
var streamItems = map[string]string{
	api.MethodVMProxy: "raw bytes to and from the guest's SSH server (port 22)",
	api.MethodEvents:  "Event objects, one JSON object per line",
}

// schema is the generated reference, as JSON Schema (2020-12) $defs plus
// one entry per method.
type schema struct {
	Schema   string                 `json:"$schema"`
	Title    string                 `json:"title"`
	Protocol int                    `json:"protocol_version"`
	Methods  map[string]methodEntry `json:"methods"`
	Defs     map[string]*jsonSchema `json:"$defs"`
}

type methodEntry struct {
	Go     string      `json:"go"` // the client.Client method
	Params *jsonSchema `json:"params"`
	Result *jsonSchema `json:"result,omitempty"`
	// Stream says what the connection carries after a stream method's
	// answer ({"stream":true}).
	Stream     string      `json:"stream,omitempty"`
	StreamItem *jsonSchema `json:"stream_item,omitempty"`
}

type jsonSchema struct {
	Ref                  string                 `json:"$ref,omitempty"`
	Type                 string                 `json:"type,omitempty"`
	Format               string                 `json:"format,omitempty"`
	ContentEncoding      string                 `json:"contentEncoding,omitempty"`
	Description          string                 `json:"description,omitempty"`
	Properties           map[string]*jsonSchema `json:"properties,omitempty"`
	Required             []string               `json:"required,omitempty"`
	Items                *jsonSchema            `json:"items,omitempty"`
	AdditionalProperties any                    `json:"additionalProperties,omitempty"`
	Nullable             bool                   `json:"-"`
	order                []string               // field order, for the markdown
}

// gen builds schemas from Go types, with descriptions from doc comments.
type gen struct {
	defs  map[string]*jsonSchema
	types map[string]reflect.Type
	docs  map[string]string // "Type" and "Type.Field" → doc text
}

func newGen(root string) (*gen, error) {
	g := &gen{defs: map[string]*jsonSchema{}, types: map[string]reflect.Type{}, docs: map[string]string{}}
	for _, dir := range docDirs {
		if err := g.readDocs(filepath.Join(root, dir)); err != nil {
			return nil, err
		}
	}
	return g, nil
}

func (g *gen) readDocs(dir string) error {
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, dir, nil, parser.ParseComments)
	if err != nil {
		return fmt.Errorf("read doc comments in %s: %w", dir, err)
	}
	for name, pkg := range pkgs {
		if strings.HasSuffix(name, "_test") {
			continue
		}
		for fname, f := range pkg.Files {
			if strings.HasSuffix(fname, "_test.go") {
				continue
			}
			for _, d := range f.Decls {
				gd, ok := d.(*ast.GenDecl)
				if !ok || gd.Tok != token.TYPE {
					continue
				}
				for _, sp := range gd.Specs {
					ts := sp.(*ast.TypeSpec)
					doc := ts.Doc
					if doc == nil && len(gd.Specs) == 1 {
						doc = gd.Doc
					}
					if doc != nil {
						g.docs[ts.Name.Name] = clean(doc.Text())
					}
					st, ok := ts.Type.(*ast.StructType)
					if !ok {
						continue
					}
					for _, fl := range st.Fields.List {
						text := ""
						if fl.Doc != nil {
							text = fl.Doc.Text()
						}
						if fl.Comment != nil {
							text = strings.TrimSpace(text + " " + fl.Comment.Text())
						}
						for _, n := range fl.Names {
							if text != "" {
								g.docs[ts.Name.Name+"."+n.Name] = clean(text)
							}
						}
					}
				}
			}
		}
	}
	return nil
}

// clean joins a comment's lines into one.
func clean(s string) string { return strings.Join(strings.Fields(s), " ") }

var timeType = reflect.TypeFor[time.Time]()

// of returns the schema of t: a $ref for a named struct (defined once in
// g.defs), inline otherwise.
func (g *gen) of(t reflect.Type) *jsonSchema {
	switch {
	case t == timeType:
		return &jsonSchema{Type: "string", Format: "date-time"}
	case t.Kind() == reflect.Pointer:
		s := g.of(t.Elem())
		c := *s
		c.Nullable = true
		return &c
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8:
		return &jsonSchema{Type: "string", ContentEncoding: "base64"}
	case t.Kind() == reflect.Slice || t.Kind() == reflect.Array:
		return &jsonSchema{Type: "array", Items: g.of(t.Elem())}
	case t.Kind() == reflect.Map:
		return &jsonSchema{Type: "object", AdditionalProperties: g.of(t.Elem())}
	case t.Kind() == reflect.String:
		return &jsonSchema{Type: "string"}
	case t.Kind() == reflect.Bool:
		return &jsonSchema{Type: "boolean"}
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return &jsonSchema{Type: "integer"}
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return &jsonSchema{Type: "number"}
	case t.Kind() == reflect.Struct && t.Name() == "":
		return g.object(t)
	case t.Kind() == reflect.Struct:
		name := t.Name()
		if prev, ok := g.types[name]; ok && prev != t {
			panic(fmt.Sprintf("apischema: two wire types named %s (%s and %s): rename one", name, prev.PkgPath(), t.PkgPath()))
		}
		if _, ok := g.defs[name]; !ok {
			g.types[name] = t
			g.defs[name] = nil // reserve: recursive types
			s := g.object(t)
			s.Description = g.docs[name]
			g.defs[name] = s
		}
		return &jsonSchema{Ref: "#/$defs/" + name}
	}
	return &jsonSchema{} // any
}

// object is a struct's schema: its JSON fields; those without omitempty
// are required.
func (g *gen) object(t reflect.Type) *jsonSchema {
	s := &jsonSchema{Type: "object", Properties: map[string]*jsonSchema{}, AdditionalProperties: false}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if name == "" {
			name = f.Name
		}
		fs := g.of(f.Type)
		c := *fs
		c.Description = g.docs[t.Name()+"."+f.Name]
		s.Properties[name] = &c
		s.order = append(s.order, name)
		if !strings.Contains(opts, "omitempty") {
			s.Required = append(s.Required, name)
		}
	}
	return s
}

// generate returns docs/api.schema.json and the generated part of
// docs/api.md.
func generate(root string) (schemaJSON, markdown []byte, err error) {
	g, err := newGen(root)
	if err != nil {
		return nil, nil, err
	}
	sc := schema{
		Schema:   "https://json-schema.org/draft/2020-12/schema",
		Title:    "banger RPC API (JSON-RPC 2.0 over a unix socket; generated by internal/tools/apischema from the daemon's method table)",
		Protocol: api.ProtocolVersion,
		Methods:  map[string]methodEntry{},
	}
	methods := daemon.Methods()
	for _, m := range methods {
		e := methodEntry{Go: "Client." + client.GoMethod(m.Name), Params: g.of(m.Params)}
		if client.GoMethod(m.Name) == "" {
			return nil, nil, fmt.Errorf("daemon method %s has no client method (client/methods.go)", m.Name)
		}
		if m.Stream {
			e.Stream = streamItems[m.Name]
			if e.Stream == "" {
				return nil, nil, fmt.Errorf("stream method %s: say what it carries in streamItems", m.Name)
			}
			if m.Name == api.MethodEvents {
				e.StreamItem = g.of(reflect.TypeFor[api.Event]())
			}
		} else {
			e.Result = g.of(m.Result)
		}
		sc.Methods[m.Name] = e
	}
	sc.Defs = g.defs
	schemaJSON, err = json.MarshalIndent(sc, "", "  ")
	if err != nil {
		return nil, nil, err
	}
	return append(schemaJSON, '\n'), g.markdown(methods, sc), nil
}

// markdown is the reference section of docs/api.md: per method its Go
// call, params and result, then every type's fields.
func (g *gen) markdown(methods []daemon.MethodSig, sc schema) []byte {
	var b bytes.Buffer
	b.WriteString(mdBegin + "\n")
	b.WriteString("<!-- Generated by `go run ./internal/tools/apischema -w` from the daemon's method table and the Go types; do not edit. -->\n\n")
	fmt.Fprintf(&b, "## Reference (protocol version %d)\n\n", api.ProtocolVersion)
	b.WriteString("Required: a params field that must be given, a result field that is always present.\n\n")
	b.WriteString("| Method | Go (banger/client) | Params | Result |\n|---|---|---|---|\n")
	for _, m := range methods {
		e := sc.Methods[m.Name]
		res := g.typeName(e.Result)
		if e.Stream != "" {
			res = "`{\"stream\":true}`, then " + e.Stream
		}
		fmt.Fprintf(&b, "| `%s` | `%s` | %s | %s |\n", m.Name, e.Go, g.typeName(e.Params), res)
	}
	names := make([]string, 0, len(g.defs))
	for n := range g.defs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		s := g.defs[n]
		fmt.Fprintf(&b, "\n### type %s\n\n", n)
		if s.Description != "" {
			b.WriteString(s.Description + "\n\n")
		}
		if len(s.order) == 0 {
			b.WriteString("No fields.\n")
			continue
		}
		b.WriteString("| Field | Type | Required | Description |\n|---|---|---|---|\n")
		req := map[string]bool{}
		for _, r := range s.Required {
			req[r] = true
		}
		for _, f := range s.order {
			p := s.Properties[f]
			r := ""
			if req[f] {
				r = "yes"
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", f, g.typeName(p), r, strings.ReplaceAll(p.Description, "|", `\|`))
		}
	}
	b.WriteString(mdEnd + "\n")
	return b.Bytes()
}

// typeName is a schema's short markdown name: a link for a defined type.
func (g *gen) typeName(s *jsonSchema) string {
	if s == nil {
		return "none"
	}
	var n string
	switch {
	case s.Ref != "":
		d := strings.TrimPrefix(s.Ref, "#/$defs/")
		n = fmt.Sprintf("[%s](#type-%s)", d, strings.ToLower(d))
	case s.Type == "array":
		n = "array of " + g.typeName(s.Items)
	case s.Type == "object" && s.Properties != nil && len(s.Properties) == 0:
		n = "none (`{}` or absent)"
	case s.Type == "object":
		if ap, ok := s.AdditionalProperties.(*jsonSchema); ok {
			n = "object of " + g.typeName(ap)
		} else {
			n = "object"
		}
	case s.ContentEncoding != "":
		n = "string (" + s.ContentEncoding + ")"
	case s.Format != "":
		n = "string (" + s.Format + ")"
	case s.Type == "":
		n = "any"
	default:
		n = s.Type
	}
	if s.Nullable {
		n += " or null"
	}
	return n
}

const (
	mdBegin = "<!-- BEGIN GENERATED REFERENCE -->"
	mdEnd   = "<!-- END GENERATED REFERENCE -->"
)

// spliceMarkdown replaces the generated block of doc (appending one if
// absent).
func spliceMarkdown(doc, block []byte) []byte {
	i := bytes.Index(doc, []byte(mdBegin))
	j := bytes.Index(doc, []byte(mdEnd))
	if i < 0 || j < i {
		out := append(bytes.TrimRight(doc, "\n"), "\n\n"...)
		return append(out, block...)
	}
	out := append([]byte{}, doc[:i]...)
	out = append(out, block...)
	return append(out, bytes.TrimLeft(doc[j+len(mdEnd):], "\n")...)
}
