package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"banger/internal/guestproto"
)

// What a command runs as, where, with which environment: the same rules for
// an SSH session (`vm exec -e/-w/-u`) and for the main process.
//
// The environment is layered, later entries winning (os/exec keeps the
// last of duplicate keys): the account's base (HOME, PATH, USER, LOGNAME,
// SHELL), then the VM's env (the image's Env and the create's -e, pushed by
// the host in the Setup request), then the session's own env requests.

// execSettings are a command's settings beyond argv and env.
type execSettings struct {
	workdir string // absolute; "" is the account's home (or / if it has none)
	user    string // USER[:GROUP]; "" is root
}

// account is a resolved USER[:GROUP].
type account struct {
	name        string
	uid, gid    uint32
	groups      []uint32
	home, shell string
}

// maxAccountFile bounds how much of /etc/passwd and /etc/group is read: the
// files belong to the guest's image, which banger does not trust either.
const (
	maxAccountFile   = 8 << 20
	maxSupplementary = 64
)

// scanColonFile calls fn with the fields of each line of a passwd-style
// file until fn returns true.
func scanColonFile(path string, fn func(fields []string) bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, maxAccountFile))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		if fn(strings.Split(line, ":")) {
			return nil
		}
	}
	return sc.Err()
}

func parseID(s string) (uint32, bool) {
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err == nil
}

// lookupAccount resolves USER[:GROUP] (names or numeric ids) against the
// guest's passwd and group files. A numeric user that passwd does not list
// runs with gid 0 and HOME=/, as in Docker; a name must exist.
func lookupAccount(spec, passwd, group string) (account, error) {
	if err := guestproto.ValidateUser(spec); err != nil {
		return account{}, err
	}
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	uidNum, numeric := parseID(userPart)
	var a account
	found := false
	err := scanColonFile(passwd, func(f []string) bool {
		if len(f) != 7 {
			return false
		}
		uid, ok1 := parseID(f[2])
		gid, ok2 := parseID(f[3])
		if !ok1 || !ok2 {
			return false
		}
		if f[0] == userPart || numeric && uid == uidNum {
			a = account{name: f[0], uid: uid, gid: gid, home: f[5], shell: f[6]}
			found = true
			return true
		}
		return false
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return account{}, fmt.Errorf("read %s: %w", passwd, err)
	}
	if !found {
		if !numeric {
			return account{}, fmt.Errorf("user %q not found in %s", userPart, passwd)
		}
		a = account{name: userPart, uid: uidNum, gid: 0, home: "/"}
	}
	if hasGroup {
		gid, ok := parseID(groupPart)
		if !ok {
			gid, ok = lookupGroup(groupPart, group)
			if !ok {
				return account{}, fmt.Errorf("group %q not found in %s", groupPart, group)
			}
		}
		a.gid = gid
		a.groups = []uint32{gid}
		return a, nil
	}
	a.groups = supplementaryGroups(a.name, a.gid, group)
	return a, nil
}

func lookupGroup(name, group string) (uint32, bool) {
	var gid uint32
	found := false
	scanColonFile(group, func(f []string) bool {
		if len(f) == 4 && f[0] == name {
			gid, found = parseID(f[2])
			return found
		}
		return false
	})
	return gid, found
}

// supplementaryGroups is the primary gid plus every group listing name as
// a member, bounded.
func supplementaryGroups(name string, primary uint32, group string) []uint32 {
	groups := []uint32{primary}
	scanColonFile(group, func(f []string) bool {
		if len(f) != 4 {
			return false
		}
		gid, ok := parseID(f[2])
		if !ok || gid == primary {
			return false
		}
		for _, m := range strings.Split(f[3], ",") {
			if m == name {
				groups = append(groups, gid)
				break
			}
		}
		return len(groups) >= maxSupplementary
	})
	return groups
}

// prepareCmd fills cmd's Env, Dir and credentials. vmEnv and sessEnv are
// KEY=VALUE lists (already validated); base is the server's root env.
func (s *sshServer) prepareCmd(cmd *exec.Cmd, vmEnv, sessEnv []string, set execSettings) error {
	env := append([]string(nil), s.env...)
	home := s.home
	if set.user != "" {
		a, err := lookupAccount(set.user, s.passwd, s.groupFile())
		if err != nil {
			return err
		}
		if a.uid != 0 || a.gid != 0 || len(a.groups) > 1 {
			cmd.SysProcAttr = sysProcAttr(cmd)
			cmd.SysProcAttr.Credential = &syscall.Credential{Uid: a.uid, Gid: a.gid, Groups: a.groups}
		}
		if a.uid != 0 {
			home = a.home
			if home == "" {
				home = "/"
			}
			shell := a.shell
			if shell == "" {
				shell = "/bin/sh"
			}
			env = append(env, "HOME="+home, "USER="+a.name, "LOGNAME="+a.name, "SHELL="+shell)
		}
	}
	env = append(env, vmEnv...)
	env = append(env, sessEnv...)
	cmd.Env = env
	if set.workdir != "" {
		if err := guestproto.ValidateWorkdir(set.workdir); err != nil {
			return err
		}
		st, err := os.Stat(set.workdir)
		if err != nil {
			return fmt.Errorf("working directory: %w", err)
		}
		if !st.IsDir() {
			return fmt.Errorf("working directory %s is not a directory", set.workdir)
		}
		cmd.Dir = set.workdir
		return nil
	}
	cmd.Dir = home
	if st, err := os.Stat(cmd.Dir); err != nil || !st.IsDir() {
		cmd.Dir = "/"
	}
	return nil
}

func sysProcAttr(cmd *exec.Cmd) *syscall.SysProcAttr {
	if cmd.SysProcAttr == nil {
		return &syscall.SysProcAttr{}
	}
	return cmd.SysProcAttr
}

// groupFile is /etc/group beside the server's passwd file (tests point
// passwd elsewhere).
func (s *sshServer) groupFile() string {
	if i := strings.LastIndexByte(s.passwd, '/'); i >= 0 {
		return s.passwd[:i+1] + "group"
	}
	return "group"
}

// sessionEnv handles one SSH "env" request: the reserved names become
// settings, others environment entries. It returns false to refuse
// (malformed, too many, too large), which the client sees as a failed
// Setenv.
func (ss *session) sessionEnv(name, value string) bool {
	if guestproto.ValidateEnvName(name) != nil || guestproto.ValidateEnvValue(name, value) != nil {
		return false
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	switch name {
	case guestproto.EnvWorkdir:
		if guestproto.ValidateWorkdir(value) != nil {
			return false
		}
		ss.settings.workdir = value
		return true
	case guestproto.EnvUser:
		if guestproto.ValidateUser(value) != nil {
			return false
		}
		ss.settings.user = value
		return true
	}
	if len(ss.env) >= guestproto.MaxEnvEntries {
		return false
	}
	ss.env = append(ss.env, name+"="+value)
	return true
}
