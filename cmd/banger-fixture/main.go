// Command banger-fixture makes the test fixtures banger's smoke suite and
// end-to-end tests use: a busybox OCI image (layout dir, pushed to a
// registry, or a `docker save` tarball for `docker load` inside a guest)
// and an in-process OCI registry that counts manifest fetches (GET
// /_counts). It is a test tool, not part of banger.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"

	"github.com/google/go-containerregistry/pkg/name"
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
	fs.Parse(os.Args[2:])
	var err error
	switch os.Args[1] {
	case "busybox-layout":
		if fs.NArg() != 1 {
			usage()
		}
		err = layoutCmd(fs.Arg(0), *tag)
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
	fmt.Fprintln(os.Stderr, "usage: banger-fixture busybox-layout DIR [-tag T] | docker-save FILE REF [-tag T] | push REF [-tag T] | push-big REF | registry [-addr A]")
	os.Exit(2)
}

func layoutCmd(dir, tag string) error {
	img, err := testfixture.BusyboxImage(tag)
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
