// Command apischema generates banger's RPC reference from the daemon's
// method table and the Go wire types: docs/api.schema.json (JSON Schema)
// and the generated reference at the end of docs/api.md. Without -w it
// checks that the committed files are current and exits 1 if not.
//
//	go run ./internal/tools/apischema -w
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
)

func main() {
	write := flag.Bool("w", false, "write the files (default: check them)")
	flag.Parse()
	root, err := moduleRoot()
	if err == nil {
		err = run(root, *write)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "apischema:", err)
		os.Exit(1)
	}
}

// run regenerates the files under root and writes them (write) or
// reports which differ.
func run(root string, write bool) error {
	sj, md, err := generate(root)
	if err != nil {
		return err
	}
	schemaPath := filepath.Join(root, "docs", "api.schema.json")
	docPath := filepath.Join(root, "docs", "api.md")
	doc, err := os.ReadFile(docPath)
	if err != nil {
		return err
	}
	newDoc := spliceMarkdown(doc, md)
	if write {
		if err := os.WriteFile(schemaPath, sj, 0o644); err != nil {
			return err
		}
		return os.WriteFile(docPath, newDoc, 0o644)
	}
	old, err := os.ReadFile(schemaPath)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var stale []string
	if !bytes.Equal(old, sj) {
		stale = append(stale, "docs/api.schema.json")
	}
	if !bytes.Equal(doc, newDoc) {
		stale = append(stale, "docs/api.md (generated reference)")
	}
	if len(stale) > 0 {
		return fmt.Errorf("%v differ from the code: run `go run ./internal/tools/apischema -w` and commit them", stale)
	}
	return nil
}

// moduleRoot is the directory holding go.mod, from the working directory
// up.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory: run from the banger checkout")
		}
		dir = parent
	}
}
