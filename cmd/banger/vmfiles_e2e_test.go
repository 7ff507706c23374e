package main

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/testenv"
)

// treeSum describes a tree: for each path (relative, sorted) its type,
// permission bits and sha256 or link target; with times, the mtime too.
func treeSum(t *testing.T, root string, times bool) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		line := fmt.Sprintf("%s %v", rel, fi.Mode())
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			line += " -> " + l
		case fi.Mode().IsRegular():
			line += " " + fileSum(t, p)
			if times {
				line += " " + fi.ModTime().UTC().Truncate(time.Second).Format(time.RFC3339)
			}
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func fileSum(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil))
}

func sameLines(t *testing.T, what string, want, got []string) {
	t.Helper()
	if strings.Join(want, "\n") == strings.Join(got, "\n") {
		return
	}
	for i := range max(len(want), len(got)) {
		var w, g string
		if i < len(want) {
			w = want[i]
		}
		if i < len(got) {
			g = got[i]
		}
		if w != g {
			t.Fatalf("%s differs (%d vs %d entries); first difference:\n want %s\n got  %s", what, len(want), len(got), w, g)
		}
	}
}

// makeTree writes n small files over 20 directories, with assorted modes,
// old mtimes and symlinks (relative, absolute, dangling, to a directory).
func makeTree(t *testing.T, root string, n int) {
	t.Helper()
	modes := []os.FileMode{0o644, 0o600, 0o755, 0o640, 0o700}
	old := time.Date(2021, 3, 4, 5, 6, 7, 0, time.UTC)
	for i := range n {
		d := filepath.Join(root, fmt.Sprintf("d%02d", i%20))
		os.MkdirAll(d, 0o755)
		p := filepath.Join(d, fmt.Sprintf("f%04d", i))
		b := make([]byte, 100+i%900)
		rand.Read(b)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, modes[i%len(modes)])
		os.Chtimes(p, old, old.Add(time.Duration(i)*time.Second))
		if i%100 == 0 {
			os.Symlink(fmt.Sprintf("f%04d", i), filepath.Join(d, fmt.Sprintf("l%04d", i)))
		}
	}
	os.Symlink("/etc/hostname", filepath.Join(root, "abs-link"))
	os.Symlink("nowhere", filepath.Join(root, "dangling"))
	os.Symlink("d01", filepath.Join(root, "dir-link"))
	os.Chmod(filepath.Join(root, "d03"), 0o750)
}

// guestTreeSum is treeSum computed in the guest with busybox find,
// sha256sum and stat.
func (e *vmEnv) guestTreeSum(t *testing.T, vm, root string) []string {
	t.Helper()
	script := `cd ` + root + ` && find . | sort | while read -r p; do
  r=${p#./}; [ "$p" = . ] && r=.
  if [ -L "$p" ]; then echo "$r L $(readlink "$p")"
  elif [ -d "$p" ]; then echo "$r D $(stat -c %a "$p")"
  else echo "$r F $(stat -c %a "$p") $(sha256sum < "$p" | cut -d' ' -f1)"; fi
done`
	out := e.mustRun(t, "vm", "exec", vm, "--", script)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	sort.Strings(lines)
	return lines
}

// hostTreeSumLikeGuest is guestTreeSum's format for a host tree.
func hostTreeSumLikeGuest(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		rel, _ := filepath.Rel(root, p)
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			out = append(out, rel+" L "+l)
		case fi.IsDir():
			out = append(out, fmt.Sprintf("%s D %o", rel, fi.Mode().Perm()))
		default:
			out = append(out, fmt.Sprintf("%s F %o %s", rel, fi.Mode().Perm(), fileSum(t, p)))
		}
		return nil
	})
	sort.Strings(out)
	return out
}

// TestVMFiles: vm cp both ways (a 200 MB random file, a tree of 2,000
// small files with symlinks, tar streams), its errors, and vm ssh-config
// with the real OpenSSH clients (ssh, scp, sftp, rsync), on one VM in a
// test network namespace. It logs vm cp's and scp's throughput for the
// same file. With the default 200 MiB it ran 12 minutes on a loaded
// 2-core TCG host: give go test -timeout 20m, or BANGER_TEST_CP_MB=16.
func TestVMFiles(t *testing.T) {
	needVMHost(t)
	bangerGID := ensureBangerGroup(t) // before the daemon: it chowns its socket
	e := newVMEnv(t)
	e.mustRun(t, "vm", "create", "--image", "busybox", "--name", "files", "--memory", "512")
	host := t.TempDir()
	// 200 MiB by default; BANGER_TEST_CP_MB shrinks it on a slow host
	// (the agent channel moved ~1 MiB/s under TCG on a loaded 2-core
	// machine).
	mb := 200
	if v, err := strconv.Atoi(os.Getenv("BANGER_TEST_CP_MB")); err == nil && v > 0 {
		mb = v
	}
	big := filepath.Join(host, "big")
	{
		f, _ := os.Create(big)
		io.CopyN(f, rand.Reader, int64(mb)<<20)
		f.Close()
	}
	bigSum := fileSum(t, big)
	tree := filepath.Join(host, "tree")
	makeTree(t, tree, 2000)

	var cpUp, cpDown time.Duration
	t.Run("big", func(t *testing.T) {
		start := time.Now()
		e.mustRun(t, "vm", "cp", big, "files:/root/big")
		cpUp = time.Since(start)
		if out := e.mustRun(t, "vm", "exec", "files", "--", "sha256sum /root/big"); !strings.HasPrefix(out, bigSum) {
			t.Fatalf("guest sha256 %q, want %s", out, bigSum)
		}
		back := filepath.Join(host, "big.back")
		start = time.Now()
		e.mustRun(t, "vm", "cp", "files:/root/big", back)
		cpDown = time.Since(start)
		if got := fileSum(t, back); got != bigSum {
			t.Fatalf("downloaded sha256 %s, want %s", got, bigSum)
		}
		os.Remove(back)
		t.Logf("vm cp %d MiB: up %s (%.1f MiB/s), down %s (%.1f MiB/s)", mb, cpUp.Round(time.Millisecond), float64(mb)/cpUp.Seconds(), cpDown.Round(time.Millisecond), float64(mb)/cpDown.Seconds())
	})

	t.Run("tree", func(t *testing.T) {
		start := time.Now()
		e.mustRun(t, "vm", "cp", "-r", "-a", tree, "files:/root/")
		t.Logf("tree of 2,000 files up: %s", time.Since(start).Round(time.Millisecond))
		sameLines(t, "guest tree", hostTreeSumLikeGuest(t, tree), e.guestTreeSum(t, "files", "/root/tree"))
		back := filepath.Join(host, "back")
		os.Mkdir(back, 0o755)
		start = time.Now()
		e.mustRun(t, "vm", "cp", "-r", "-a", "files:/root/tree", back)
		t.Logf("tree of 2,000 files down: %s", time.Since(start).Round(time.Millisecond))
		sameLines(t, "tree after a round trip with -a", treeSum(t, tree, true), treeSum(t, filepath.Join(back, "tree"), true))
		// Without -a: the permission bits, not the times.
		e.mustRun(t, "vm", "cp", "-r", "files:/root/tree", filepath.Join(back, "plain"))
		sameLines(t, "tree without -a", treeSum(t, tree, false), treeSum(t, filepath.Join(back, "plain"), false))
		if fi, _ := os.Stat(filepath.Join(back, "plain/d00/f0000")); fi.ModTime().Before(time.Now().Add(-time.Hour)) {
			t.Fatalf("without -a the mtime was kept: %v", fi.ModTime())
		}
	})

	t.Run("tar", func(t *testing.T) {
		// VM:PATH - writes a tar; - VM:DIR extracts one. A tar is one
		// sequential stream (a round trip per file operation), so this
		// uses one directory of the tree (100 files, a symlink) plus the
		// top-level links, not all 2,000 files.
		e.mustRun(t, "vm", "exec", "files", "--", "mkdir -p /root/small && cp -a /root/tree/d05 /root/tree/abs-link /root/tree/dangling /root/tree/dir-link /root/small/")
		small := filepath.Join(host, "small")
		os.Mkdir(small, 0o755)
		for _, n := range []string{"d05", "abs-link", "dangling", "dir-link"} {
			if out, err := exec.Command("cp", "-a", filepath.Join(tree, n), small).CombinedOutput(); err != nil {
				t.Fatalf("cp: %v %s", err, out)
			}
		}
		cmd := exec.Command(bangerBin, "--socket", e.socket, "vm", "cp", "files:/root/small", "-")
		var tarOut, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &tarOut, &errb
		start := time.Now()
		if err := cmd.Run(); err != nil {
			t.Fatalf("vm cp files:/root/small -: %v %s", err, errb.String())
		}
		t.Logf("tar of 100 files out: %s", time.Since(start).Round(time.Millisecond))
		x := filepath.Join(host, "untar")
		os.Mkdir(x, 0o755)
		untar := exec.Command("tar", "-C", x, "-xpf", "-")
		untar.Stdin = bytes.NewReader(tarOut.Bytes())
		if out, err := untar.CombinedOutput(); err != nil {
			t.Fatalf("tar -x: %v %s", err, out)
		}
		sameLines(t, "tree from the tar", treeSum(t, small, true), treeSum(t, filepath.Join(x, "small"), true))
		checkTarNames(t, tarOut.Bytes(), "small/")

		e.mustRun(t, "vm", "exec", "files", "--", "mkdir /root/fromtar")
		cmd = exec.Command(bangerBin, "--socket", e.socket, "vm", "cp", "-", "files:/root/fromtar")
		cmd.Stdin = bytes.NewReader(tarOut.Bytes())
		start = time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("vm cp - files:/root/fromtar: %v %s", err, out)
		}
		t.Logf("tar of 100 files in: %s", time.Since(start).Round(time.Millisecond))
		sameLines(t, "guest tree from a tar", hostTreeSumLikeGuest(t, small), e.guestTreeSum(t, "files", "/root/fromtar/small"))
	})

	t.Run("errors", func(t *testing.T) {
		fifo := filepath.Join(host, "fifo")
		syscall.Mkfifo(fifo, 0o644)
		ok := filepath.Join(host, "ok")
		os.WriteFile(ok, []byte("ok"), 0o644)
		e.mustRun(t, "vm", "exec", "files", "--", "mkdir /root/errs")
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{ok, fifo, "files:/root/errs/"}, fifo + ": not a regular file, directory or symlink (a named pipe)"},
			{[]string{ok, filepath.Join(host, "missing"), "files:/root/errs/"}, filepath.Join(host, "missing") + ": no such file or directory"},
			{[]string{tree, "files:/root/errs/"}, tree + ": is a directory (use -r)"},
			{[]string{"files:/root/nope", host}, "files:/root/nope: no such file or directory"},
			{[]string{ok, "files:"}, `"files:": no path after the colon`},
			{[]string{ok, host}, "both sides are on the host"},
			{[]string{"files:/etc/hostname", "files:/root/x"}, "both sides are in VMs"},
			{[]string{ok, "files:/root/no/such/dir/x"}, "files:/root/no/such/dir: no such directory"},
			{[]string{ok, "nosuchvm:/root/"}, `VM "nosuchvm" not found`},
		} {
			_, stderr, err := e.run(append([]string{"vm", "cp"}, tc.args...)...)
			if err == nil || !strings.Contains(stderr, tc.want) {
				t.Errorf("vm cp %v: %v %q, want an error with %q", tc.args, err, stderr, tc.want)
			}
		}
		if out := e.mustRun(t, "vm", "exec", "files", "--", "ls -A /root/errs"); out != "" {
			t.Fatalf("failed copies wrote %q", out)
		}
	})

	t.Run("nonroot", func(t *testing.T) {
		// The CLI reads the host side with its own rights: a file the
		// caller cannot read fails with its name, before anything is
		// written (and before the daemon is asked anything).
		dir, err := os.MkdirTemp("", "banger-nonroot")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		os.Chmod(dir, 0o755)
		bin := filepath.Join(dir, "banger")
		data, _ := os.ReadFile(bangerBin)
		os.WriteFile(bin, data, 0o755)
		secret := filepath.Join(dir, "secret")
		os.WriteFile(secret, []byte("root only"), 0o600)
		cmd := exec.Command(bin, "--socket", e.socket, "vm", "cp", secret, "files:/root/errs/")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), secret+": permission denied") {
			t.Fatalf("non-root copy of a root-only file: %v %q", err, out)
		}
		if out := e.mustRun(t, "vm", "exec", "files", "--", "ls -A /root/errs"); out != "" {
			t.Fatalf("the refused copy wrote %q", out)
		}
		// A member of the banger group copies both ways with their own
		// key, into their own VM, reading and writing as themselves.
		alice := newGroupUser(t, bangerGID)
		abin := userBin(t)
		for p := filepath.Dir(e.socket); p != "/tmp" && p != "/"; p = filepath.Dir(p) {
			os.Chmod(p, 0o755)
		}
		as := func(args ...string) string {
			t.Helper()
			out, stderr, err := e.runAs(alice, abin, bangerGID, args...)
			if err != nil {
				t.Fatalf("banger %v as %s: %v\n%s\n%s", args, alice.name, err, out, stderr)
			}
			return out
		}
		mine := filepath.Join(alice.home, "files")
		if out, err := exec.Command("cp", "-a", big, tree, alice.home).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v %s", err, out)
		}
		if out, err := exec.Command("chown", "-R", fmt.Sprint(alice.uid)+":"+fmt.Sprint(alice.gid), alice.home).CombinedOutput(); err != nil {
			t.Fatalf("chown: %v %s", err, out)
		}
		os.Mkdir(mine, 0o755)
		os.Chown(mine, int(alice.uid), int(alice.gid))
		as("vm", "create", "--image", "busybox", "--name", "alicefiles", "--memory", "512")
		as("vm", "cp", filepath.Join(alice.home, "big"), "alicefiles:/root/big")
		as("vm", "cp", "alicefiles:/root/big", filepath.Join(mine, "big"))
		if got := fileSum(t, filepath.Join(mine, "big")); got != bigSum {
			t.Fatalf("%s's round trip of big: sha256 %s, want %s", alice.name, got, bigSum)
		}
		if fi, _ := os.Stat(filepath.Join(mine, "big")); fi.Sys().(*syscall.Stat_t).Uid != alice.uid {
			t.Fatalf("the file %s copied out is not theirs", alice.name)
		}
		as("vm", "cp", "-r", "-a", filepath.Join(alice.home, "tree"), "alicefiles:/root/")
		as("vm", "cp", "-r", "-a", "alicefiles:/root/tree", filepath.Join(mine, "tree"))
		sameLines(t, alice.name+"'s tree after a round trip with -a", treeSum(t, tree, true), treeSum(t, filepath.Join(mine, "tree"), true))
		// Their ssh-config with plain OpenSSH, as them.
		cfg := filepath.Join(alice.home, "ssh_config")
		os.WriteFile(cfg, []byte(as("vm", "ssh-config", "alicefiles")), 0o644)
		ssh := exec.Command("ssh", "-F", cfg, "alicefiles", "--", "uname", "-r")
		ssh.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: alice.uid, Gid: alice.gid, Groups: []uint32{bangerGID}}}
		ssh.Env = []string{"HOME=" + alice.home, "PATH=" + filepath.Dir(abin) + ":/usr/bin:/bin"}
		if out, err := ssh.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != e.release {
			t.Fatalf("ssh through %s's ssh-config: %v %q", alice.name, err, out)
		}
		as("vm", "rm", "-f", "alicefiles")
	})

	t.Run("stopped", func(t *testing.T) {
		e.mustRun(t, "vm", "create", "--image", "busybox", "--name", "off", "--no-start")
		_, stderr, err := e.run("vm", "cp", big, "off:/root/")
		if err == nil || !strings.Contains(stderr, "banger vm start off") {
			t.Fatalf("copy to a stopped VM: %v %q", err, stderr)
		}
	})

	t.Run("ssh-config", func(t *testing.T) {
		testenv.RequireTool(t, "ssh", "scp", "sftp")
		cfgText := e.mustRun(t, "vm", "ssh-config", "files")
		cfg := filepath.Join(host, "ssh_config")
		os.WriteFile(cfg, []byte(cfgText), 0o600)
		for _, want := range []string{"Host files files.vm", "User root", "StrictHostKeyChecking yes", "UserKnownHostsFile ", "ProxyCommand ", "IdentityFile "} {
			if !strings.Contains(cfgText, want) {
				t.Fatalf("ssh-config lacks %q:\n%s", want, cfgText)
			}
		}
		var js []map[string]any
		if err := json.Unmarshal([]byte(e.mustRun(t, "vm", "ssh-config", "-o", "json")), &js); err != nil || len(js) != 1 || js[0]["name"] != "files" {
			t.Fatalf("ssh-config -o json (all running VMs: only files): %v %v", js, err)
		}
		ssh := func(name string, args ...string) string {
			t.Helper()
			out, err := exec.Command(name, args...).CombinedOutput()
			if err != nil {
				t.Fatalf("%s %v: %v\n%s", name, args, err, out)
			}
			return string(out)
		}
		if out := ssh("ssh", "-F", cfg, "files", "--", "uname", "-r"); strings.TrimSpace(out) != e.release {
			t.Fatalf("ssh uname -r = %q, want %s", out, e.release)
		}
		ssh("ssh", "-F", cfg, "files.vm", "true")
		// scp (SFTP protocol by default in OpenSSH 9), and the figure
		// against vm cp for the same file.
		start := time.Now()
		ssh("scp", "-F", cfg, big, "files:/root/big.scp")
		scpUp := time.Since(start)
		if out := e.mustRun(t, "vm", "exec", "files", "--", "sha256sum /root/big.scp"); !strings.HasPrefix(out, bigSum) {
			t.Fatalf("scp'd file sha256 %q", out)
		}
		start = time.Now()
		ssh("scp", "-F", cfg, "files:/root/big.scp", filepath.Join(host, "big.scp"))
		scpDown := time.Since(start)
		if fileSum(t, filepath.Join(host, "big.scp")) != bigSum {
			t.Fatal("scp download differs")
		}
		os.Remove(filepath.Join(host, "big.scp"))
		e.mustRun(t, "vm", "exec", "files", "--", "rm /root/big.scp")
		f := float64(mb)
		t.Logf("%d MiB up: vm cp %s (%.1f MiB/s), scp %s (%.1f MiB/s); down: vm cp %s (%.1f MiB/s), scp %s (%.1f MiB/s)", mb,
			cpUp.Round(time.Millisecond), f/cpUp.Seconds(), scpUp.Round(time.Millisecond), f/scpUp.Seconds(),
			cpDown.Round(time.Millisecond), f/cpDown.Seconds(), scpDown.Round(time.Millisecond), f/scpDown.Seconds())
		// sftp in batch mode.
		batch := filepath.Join(host, "batch")
		os.WriteFile(batch, []byte("put "+filepath.Join(host, "ok")+" /root/via-sftp\nls /root\n"), 0o644)
		if out := ssh("sftp", "-F", cfg, "-b", batch, "files"); !strings.Contains(out, "via-sftp") {
			t.Fatalf("sftp -b: %s", out)
		}
		if out := e.mustRun(t, "vm", "exec", "files", "--", "cat /root/via-sftp"); out != "ok" {
			t.Fatalf("sftp put: %q", out)
		}
		// rsync: the busybox image has none, so put the host's rsync and
		// its libraries into the guest with vm cp first.
		if !testenv.HaveTool(t, "rsync") {
			return
		}
		e.installHostBinary(t, "files", "/usr/bin/rsync")
		small := filepath.Join(tree, "d05")
		ssh("rsync", "-a", "-e", "ssh -F "+cfg, small+"/", "files:/root/rsynced/")
		sameLines(t, "rsync'd tree", hostTreeSumLikeGuest(t, small), e.guestTreeSum(t, "files", "/root/rsynced"))
		back := filepath.Join(host, "rsync-back")
		ssh("rsync", "-a", "-e", "ssh -F "+cfg, "files:/root/rsynced/", back+"/")
		sameLines(t, "rsync round trip", treeSum(t, small, true), treeSum(t, back, true))
	})
}

// checkTarNames: entries are under the source's base name, relative.
func checkTarNames(t *testing.T, b []byte, prefix string) {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(h.Name, prefix) {
			t.Fatalf("tar entry %q not under %s", h.Name, prefix)
		}
	}
}

// installHostBinary copies a host binary and the shared libraries ldd
// lists (symlinks resolved) into the guest at the same paths.
func (e *vmEnv) installHostBinary(t *testing.T, vm, bin string) {
	t.Helper()
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		t.Fatalf("ldd %s: %v", bin, err)
	}
	files := []string{bin}
	for _, l := range strings.Split(string(out), "\n") {
		for _, f := range strings.Fields(l) {
			if strings.HasPrefix(f, "/") {
				files = append(files, f)
			}
		}
	}
	for _, f := range files {
		real, err := filepath.EvalSymlinks(f)
		if err != nil {
			t.Fatal(err)
		}
		e.mustRun(t, "vm", "exec", vm, "--", "mkdir -p "+filepath.Dir(f))
		e.mustRun(t, "vm", "cp", real, vm+":"+f)
	}
}
