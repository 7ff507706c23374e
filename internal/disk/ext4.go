// Package disk wraps e2fsprogs (mkfs.ext4 -d, e2fsck, resize2fs, debugfs)
// and sparse-file helpers. Nothing here mounts a filesystem or needs a loop
// device: images are built from directory trees and edited with debugfs.
package disk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

const (
	blockSize = 4096
	inodeSize = 256
	mib       = 1 << 20
)

// MkfsExt4FromDir makes an ext4 filesystem of sizeBytes at out whose
// contents are a copy of srcDir (ownership, modes, xattrs, hard links,
// device nodes, symlinks), using `mkfs.ext4 -d`. out is created (or
// truncated) as a sparse file; callers pass a temp path and rename it into
// place once it has passed Fsck.
//
// The inode count is sized from the tree itself so a tree of many small
// files never runs out of inodes however small the image is.
func MkfsExt4FromDir(ctx context.Context, srcDir, out string, sizeBytes int64, label string) error {
	st, err := os.Lstat(srcDir)
	if err != nil {
		return fmt.Errorf("mkfs.ext4 from %s: %w", srcDir, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("mkfs.ext4 from %s: not a directory", srcDir)
	}
	if len(label) > 16 {
		return fmt.Errorf("mkfs.ext4: label %q is longer than ext4's 16 bytes", label)
	}
	if sizeBytes < 8*mib {
		return fmt.Errorf("mkfs.ext4 %s: size %d bytes is below the 8 MiB minimum", out, sizeBytes)
	}
	u, err := usageOf(srcDir)
	if err != nil {
		return fmt.Errorf("mkfs.ext4 from %s: %w", srcDir, err)
	}
	inodes := u.inodes + u.inodes/5 + 1024
	if err := CreateSparse(out, sizeBytes); err != nil {
		return err
	}
	args := []string{
		"-q", "-F",
		"-t", "ext4",
		"-b", strconv.Itoa(blockSize),
		"-I", strconv.Itoa(inodeSize),
		"-N", strconv.FormatInt(inodes, 10),
		"-m", "0",
		"-L", label,
		"-E", "root_owner=0:0,nodiscard",
		"-d", srcDir,
		out,
	}
	if msg, err := runTool(ctx, "mkfs.ext4", args...); err != nil {
		os.Remove(out) // never leave a half-built image behind
		return fmt.Errorf("mkfs.ext4 -d %s (image %d bytes): %w: %s", srcDir, sizeBytes, err, msg)
	}
	return nil
}

// SizeForTree returns an image size for dir: its content as ext4 would
// store it (apparent bytes rounded up to 4 KiB blocks, one inode each, hard
// links counted once) plus 20% and 64 MiB headroom for metadata, the journal
// and a little free space, rounded up to a whole MiB.
func SizeForTree(dir string) (int64, error) {
	u, err := usageOf(dir)
	if err != nil {
		return 0, fmt.Errorf("size of %s: %w", dir, err)
	}
	content := u.blocks*blockSize + (u.inodes+u.inodes/5+1024)*inodeSize
	size := content + content/5 + 64*mib
	return (size + mib - 1) / mib * mib, nil
}

type usage struct {
	blocks int64 // 4 KiB blocks of file, directory and long-symlink data
	inodes int64 // distinct inodes
}

func usageOf(dir string) (usage, error) {
	var u usage
	type devIno struct{ dev, ino uint64 }
	seen := map[devIno]bool{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 && !info.IsDir() {
			k := devIno{uint64(st.Dev), st.Ino}
			if seen[k] {
				return nil
			}
			seen[k] = true
		}
		u.inodes++
		switch {
		case info.Mode().IsRegular():
			u.blocks += (info.Size() + blockSize - 1) / blockSize
		case info.IsDir():
			u.blocks++
		case info.Mode()&fs.ModeSymlink != 0 && info.Size() >= 60:
			u.blocks++ // longer targets leave the inode for a data block
		}
		return nil
	})
	return u, err
}

// Fsck runs `e2fsck -fn` on the image and fails, with e2fsck's output, if it
// finds anything at all.
func Fsck(ctx context.Context, path string) error {
	out, err := runTool(ctx, "e2fsck", "-fn", path)
	if err != nil {
		return fmt.Errorf("e2fsck -fn %s: %w: %s", path, err, out)
	}
	return nil
}

// Grow enlarges the ext4 image at path to size bytes: it extends the file
// (sparsely) and runs resize2fs, running `e2fsck -fy` first when resize2fs
// asks for a check. A size equal to the current one is a no-op; a smaller
// one is refused, since shrinking could drop data.
func Grow(ctx context.Context, path string, size int64) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("grow %s: %w", path, err)
	}
	switch {
	case size == st.Size():
		return nil
	case size < st.Size():
		return fmt.Errorf("grow %s to %d bytes: the image is already %d bytes; ask for at least that", path, size, st.Size())
	}
	if err := os.Truncate(path, size); err != nil {
		return fmt.Errorf("grow %s: %w", path, err)
	}
	out, err := runTool(ctx, "resize2fs", path)
	if err != nil && bytes.Contains(out, []byte("e2fsck -f")) {
		if fout, ferr := runTool(ctx, "e2fsck", "-fy", path); ferr != nil && exitCode(ferr) != 1 {
			return fmt.Errorf("grow %s: e2fsck -fy: %w: %s", path, ferr, fout)
		}
		out, err = runTool(ctx, "resize2fs", path)
	}
	if err != nil {
		return fmt.Errorf("grow %s: resize2fs: %w: %s", path, err, out)
	}
	return nil
}

// runTool runs an e2fsprogs tool and returns its combined output.
func runTool(ctx context.Context, name string, args ...string) ([]byte, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		return nil, fmt.Errorf("%s not found: install e2fsprogs (%w)", name, err)
	}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = toolEnv()
	out, err := cmd.CombinedOutput()
	return bytes.TrimSpace(out), err
}

// toolEnv gives e2fsprogs a stable locale (its messages are parsed) and
// keeps e2fsck from reading a user's e2fsck.conf.
func toolEnv() []string {
	env := []string{"LC_ALL=C", "E2FSCK_CONFIG=/dev/null"}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PATH=") {
			env = append(env, kv)
		}
	}
	return env
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}
