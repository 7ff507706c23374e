// Command banger-fixture makes the test fixtures banger's smoke suite and
// end-to-end tests use: a busybox OCI image (layout dir, pushed to a
// registry, or a `docker save` tarball for `docker load` inside a guest),
// an application image made from it (app-layout: Entrypoint, Cmd, Env and
// files of the caller's choosing) and an in-process OCI registry that
// counts manifest fetches (GET /_counts). It is a test tool, not part of
// banger.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"banger/internal/testfixture"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	tag := fs.String("tag", "v1", "marker written to /etc/banger-fixture")
	addr := fs.String("addr", "127.0.0.1:5000", "registry listen address")
	entrypoint := fs.String("entrypoint", "", "app-layout: Entrypoint, a JSON array of strings")
	cmd := fs.String("cmd", "", "app-layout: Cmd, a JSON array of strings (empty: none)")
	var env, files listFlag
	fs.Var(&env, "env", "app-layout: KEY=VALUE added to the image's Env (repeatable)")
	fs.Var(&files, "file", "app-layout: PATH=CONTENT, a file in one more layer (repeatable)")
	fs.Parse(os.Args[2:])
	var err error
	switch os.Args[1] {
	case "busybox-layout":
		if fs.NArg() != 1 {
			usage()
		}
		err = layoutCmd(fs.Arg(0), *tag)
	case "app-layout":
		if fs.NArg() != 1 {
			usage()
		}
		err = appLayoutCmd(fs.Arg(0), *tag, *entrypoint, *cmd, env, files)
	case "docker-save":
		if fs.NArg() != 2 {
			usage()
		}
		err = dockerSaveCmd(fs.Arg(0), fs.Arg(1), *tag)
	case "push":
		if fs.NArg() != 1 {
			usage()
		}
		err = pushCmd(fs.Arg(0), *tag)
	case "push-big":
		if fs.NArg() != 1 {
			usage()
		}
		err = pushBigCmd(fs.Arg(0))
	case "registry":
		err = registryCmd(*addr)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "banger-fixture:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: banger-fixture busybox-layout DIR [-tag T] | app-layout [-entrypoint JSON] [-cmd JSON] [-env K=V]... [-file PATH=CONTENT]... DIR | docker-save FILE REF [-tag T] | push REF [-tag T] | push-big REF | registry [-addr A]")
	os.Exit(2)
}

func layoutCmd(dir, tag string) error {
	img, err := testfixture.BusyboxImage(tag)
	if err != nil {
		return err
	}
	return testfixture.WriteLayout(dir, img)
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// appLayoutCmd writes the busybox image made into an application image:
// the files in one more layer, the Entrypoint and Cmd replaced, env added.
func appLayoutCmd(dir, tag, entrypoint, cmd string, env, files []string) error {
	var ep, c []string
	if entrypoint != "" {
		if err := json.Unmarshal([]byte(entrypoint), &ep); err != nil {
			return fmt.Errorf("-entrypoint %q: want a JSON array of strings: %w", entrypoint, err)
		}
	}
	if cmd != "" {
		if err := json.Unmarshal([]byte(cmd), &c); err != nil {
			return fmt.Errorf("-cmd %q: want a JSON array of strings: %w", cmd, err)
		}
	}
	fm := map[string]string{}
	for _, f := range files {
		p, content, ok := strings.Cut(f, "=")
		if !ok || p == "" || strings.HasPrefix(p, "/") {
			return fmt.Errorf("-file %q: want PATH=CONTENT with a relative PATH", f)
		}
		fm[p] = content
	}
	for _, e := range env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return fmt.Errorf("-env %q: want KEY=VALUE", e)
		}
	}
	img, err := testfixture.AppImage(tag, fm, func(cf *v1.Config) {
		cf.Entrypoint = ep
		cf.Cmd = c
		cf.Env = append(cf.Env, env...)
	})
	if err != nil {
		return err
	}
	return testfixture.WriteLayout(dir, img)
}

// dockerSaveCmd writes the busybox image as a `docker save` tarball
// (manifest.json, the config and one tar per layer) tagged REF, so a
// Docker inside a guest can `docker load` it with no registry at all.
func dockerSaveCmd(file, ref, tag string) error {
	r, err := name.NewTag(ref)
	if err != nil {
		return err
	}
	img, err := testfixture.BusyboxImage(tag)
	if err != nil {
		return err
	}
	tmp := file + ".tmp"
	if err := tarball.WriteToFile(tmp, r, img); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, file)
}

func pushCmd(ref, tag string) error {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return err
	}
	img, err := testfixture.BusyboxImage(tag)
	if err != nil {
		return err
	}
	return remote.Write(r, img)
}

func pushBigCmd(ref string) error {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return err
	}
	img, err := testfixture.BigImage(5, 100)
	if err != nil {
		return err
	}
	return remote.Write(r, img)
}

func registryCmd(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Println(ln.Addr().String())
	return testfixture.NewRegistry().Serve(ln)
}
