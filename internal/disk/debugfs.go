package disk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"regexp"
	"strings"
)

// These helpers edit files inside an ext4 image with debugfs, so a key can
// be put on a disk image without mounting it. Paths are absolute paths
// inside the image. debugfs resolves symlinks inside the image only; it
// never touches the host's files.

// ReadFileFromExt4 returns the contents of the regular file p inside img.
// A missing file gives an error that matches fs.ErrNotExist.
func ReadFileFromExt4(ctx context.Context, img, p string) ([]byte, error) {
	if err := checkImagePath(p); err != nil {
		return nil, err
	}
	typ, err := statType(ctx, img, p)
	if err != nil {
		return nil, err
	}
	if typ != "regular" {
		return nil, fmt.Errorf("read %s in %s: it is a %s, not a regular file", p, img, typ)
	}
	out, err := debugfs(ctx, img, false, "-R", "cat "+quote(p))
	if err != nil {
		return nil, fmt.Errorf("read %s in %s: %w", p, img, err)
	}
	return out, nil
}

// WriteFileToExt4 writes data to the file p inside img (replacing any
// file or symlink there) with the given permission bits and owner. The
// parent directory must exist; see MkdirExt4.
func WriteFileToExt4(ctx context.Context, img, p string, data []byte, mode os.FileMode, uid, gid int) error {
	if err := checkImagePath(p); err != nil {
		return err
	}
	if p == "/" {
		return fmt.Errorf("write / in %s: not a file path", img)
	}
	dir, base := path.Dir(p), path.Base(p)
	dtyp, err := statType(ctx, img, dir)
	if err != nil {
		return fmt.Errorf("write %s in %s: parent: %w", p, img, err)
	}
	if dtyp != "directory" {
		return fmt.Errorf("write %s in %s: parent %s is a %s, not a directory", p, img, dir, dtyp)
	}
	typ, err := statType(ctx, img, p)
	missing := err != nil && isNotExist(err)
	if err != nil && !missing {
		return err
	}
	if typ == "directory" {
		return fmt.Errorf("write %s in %s: a directory is in the way; remove it from the image first", p, img)
	}

	tmp, err := os.CreateTemp("", "banger-debugfs-*")
	if err != nil {
		return fmt.Errorf("write %s in %s: %w", p, img, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s in %s: %w", p, img, err)
	}
	if strings.ContainsAny(tmp.Name(), "\"\n") {
		return fmt.Errorf("write %s in %s: temp dir path %q has a quote or newline; set TMPDIR", p, img, tmp.Name())
	}

	cmds := []string{"cd " + quote(dir)}
	if !missing {
		cmds = append(cmds, "rm "+quote(base))
	}
	cmds = append(cmds, "write "+quote(tmp.Name())+" "+quote(base))
	cmds = append(cmds, setInode(base, 0o100000|unixPerm(mode), uid, gid)...)
	if _, err := debugfsScript(ctx, img, cmds); err != nil {
		return fmt.Errorf("write %s in %s: %w", p, img, err)
	}
	return nil
}

// MkdirExt4 makes p a directory inside img with the given permission bits
// and owner: an existing directory keeps its contents and gets the new
// mode and owner; anything else at p (a file, a symlink) is replaced.
func MkdirExt4(ctx context.Context, img, p string, mode os.FileMode, uid, gid int) error {
	if err := checkImagePath(p); err != nil {
		return err
	}
	typ, err := statType(ctx, img, p)
	missing := err != nil && isNotExist(err)
	if err != nil && !missing {
		return err
	}
	dir, base := path.Dir(p), path.Base(p)
	var cmds []string
	if p == "/" {
		cmds = []string{"cd /"}
		base = "."
	} else {
		cmds = []string{"cd " + quote(dir)}
	}
	switch {
	case missing:
		cmds = append(cmds, "mkdir "+quote(base))
	case typ != "directory":
		cmds = append(cmds, "rm "+quote(base), "mkdir "+quote(base))
	}
	cmds = append(cmds, setInode(base, 0o040000|unixPerm(mode), uid, gid)...)
	if _, err := debugfsScript(ctx, img, cmds); err != nil {
		return fmt.Errorf("mkdir %s in %s: %w", p, img, err)
	}
	return nil
}

func setInode(name string, mode uint32, uid, gid int) []string {
	q := quote(name)
	return []string{
		fmt.Sprintf("sif %s mode 0%o", q, mode),
		fmt.Sprintf("sif %s uid %d", q, uid),
		fmt.Sprintf("sif %s gid %d", q, gid),
	}
}

func unixPerm(m os.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&os.ModeSetuid != 0 {
		u |= 0o4000
	}
	if m&os.ModeSetgid != 0 {
		u |= 0o2000
	}
	if m&os.ModeSticky != 0 {
		u |= 0o1000
	}
	return u
}

var typeRE = regexp.MustCompile(`Type: (\S+)`)

// statType returns the inode type debugfs reports for p ("regular",
// "directory", "symlink", …); the final component is not followed.
func statType(ctx context.Context, img, p string) (string, error) {
	out, err := debugfs(ctx, img, false, "-R", "stat "+quote(p))
	if err != nil {
		if strings.Contains(err.Error(), "File not found") {
			return "", fmt.Errorf("%s in %s: %w", p, img, fs.ErrNotExist)
		}
		return "", fmt.Errorf("stat %s in %s: %w", p, img, err)
	}
	m := typeRE.FindSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("stat %s in %s: no type in debugfs output: %s", p, img, firstLine(out))
	}
	return string(m[1]), nil
}

func isNotExist(err error) bool { return err != nil && errors.Is(err, fs.ErrNotExist) }

// debugfsScript runs commands with `debugfs -w -f` and fails if debugfs
// reported any error (it exits 0 even when a command fails).
func debugfsScript(ctx context.Context, img string, cmds []string) ([]byte, error) {
	f, err := os.CreateTemp("", "banger-debugfs-cmds-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	_, err = f.WriteString(strings.Join(cmds, "\n") + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	return debugfs(ctx, img, true, "-f", f.Name())
}

// debugfs runs debugfs on img and returns its stdout. Anything on stderr
// other than the version banner is an error.
func debugfs(ctx context.Context, img string, write bool, args ...string) ([]byte, error) {
	bin, err := exec.LookPath("debugfs")
	if err != nil {
		return nil, fmt.Errorf("debugfs not found: install e2fsprogs (%w)", err)
	}
	if _, err := os.Stat(img); err != nil {
		return nil, err
	}
	full := []string{}
	if write {
		full = append(full, "-w")
	}
	full = append(full, args...)
	full = append(full, img)
	cmd := exec.CommandContext(ctx, bin, full...)
	cmd.Env = append(toolEnv(), "DEBUGFS_PAGER=__none__", "PAGER=__none__")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var problems []string
	for _, line := range strings.Split(stderr.String(), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "debugfs ") && strings.HasSuffix(line, ")") {
			continue
		}
		problems = append(problems, line)
	}
	if runErr != nil {
		return nil, fmt.Errorf("debugfs: %w: %s", runErr, strings.Join(problems, "; "))
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("debugfs: %s", strings.Join(problems, "; "))
	}
	return stdout.Bytes(), nil
}

// checkImagePath accepts clean absolute paths that debugfs's command
// parser can carry inside double quotes.
func checkImagePath(p string) error {
	if !strings.HasPrefix(p, "/") || path.Clean(p) != p {
		return fmt.Errorf("image path %q: want a clean absolute path such as /.ssh/authorized_keys", p)
	}
	for _, r := range p {
		if r == '"' || r < 0x20 || r == 0x7f {
			return fmt.Errorf("image path %q: quotes and control characters are not supported", p)
		}
	}
	return nil
}

func quote(s string) string { return `"` + s + `"` }

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\n")
	return s
}
