package guestproto

import (
	"strings"
	"testing"
)

func TestSetupValidation(t *testing.T) {
	ok := `{"env":["A=1","PATH=/bin"],"main":{"argv":["httpd","-f"],"working_dir":"/www","user":"nobody:nogroup","restart":"always"}}`
	s, err := DecodeSetup([]byte(ok))
	if err != nil || s.Main == nil || s.Main.Restart != RestartAlways || len(s.Env) != 2 {
		t.Fatalf("%+v %v", s, err)
	}
	for name, bad := range map[string]string{
		"empty argv":    `{"main":{"argv":[]}}`,
		"empty argv0":   `{"main":{"argv":[""]}}`,
		"env no equals": `{"env":["A"]}`,
		"env bad name":  `{"env":["1A=x"]}`,
		"env NUL":       `{"env":["A=x\u0000y"]}`,
		"relative dir":  `{"main":{"argv":["x"],"working_dir":"tmp"}}`,
		"bad user":      `{"main":{"argv":["x"],"user":"a b"}}`,
		"bad group":     `{"main":{"argv":["x"],"user":"a:"}}`,
		"bad restart":   `{"main":{"argv":["x"],"restart":"sometimes"}}`,
		"not json":      `{`,
		"too big":       `{"env":["A=` + strings.Repeat("x", MaxSetupBytes) + `"]}`,
	} {
		if _, err := DecodeSetup([]byte(bad)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestExitRecord(t *testing.T) {
	for _, c := range []int{0, 3, 137, 255} {
		got, err := ParseExitRecord([]byte(ExitRecord(c)))
		if err != nil || got != c {
			t.Fatalf("%d: %d %v", c, got, err)
		}
	}
	for _, bad := range []string{"", "status", "status -1", "status 256", "status 1x", "exit 3", "status " + strings.Repeat("1", 100)} {
		if _, err := ParseExitRecord([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestSetupReply(t *testing.T) {
	if r, err := DecodeSetupReply([]byte(`{"init":"image","init_path":"/usr/lib/systemd/systemd"}`)); err != nil || r.Init != InitImage {
		t.Fatalf("%+v %v", r, err)
	}
	for _, bad := range []string{`{"init":"auto"}`, `{}`, `[`, `{"init":"banger","x":"` + strings.Repeat("x", MaxReplyBytes) + `"}`} {
		if _, err := DecodeSetupReply([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestShellAndInitRule(t *testing.T) {
	for _, argv := range [][]string{{"/bin/sh"}, {"bash"}, {"/bin/bash", "-l"}, {"sh", "-i"}} {
		if !IsShell(argv) {
			t.Errorf("%v: want shell", argv)
		}
	}
	for _, argv := range [][]string{nil, {"sh", "-c", "x"}, {"httpd", "-f"}, {"/bin/busybox", "httpd"}} {
		if IsShell(argv) {
			t.Errorf("%v: not a bare shell", argv)
		}
	}
	for _, argv := range [][]string{{"/sbin/init"}, {"/lib/systemd/systemd"}, {"systemd", "--system"}} {
		if !IsInit(argv) {
			t.Errorf("%v: want init", argv)
		}
	}
	if IsInit([]string{"nginx"}) {
		t.Error("nginx is no init")
	}
}

func TestValidateUser(t *testing.T) {
	for _, u := range []string{"", "root", "nobody:nogroup", "1000", "1000:1000", "www-data", "svc$"} {
		if err := ValidateUser(u); err != nil {
			t.Errorf("%q: %v", u, err)
		}
	}
	for _, u := range []string{":", "a:b:c", "-x", "a/b", strings.Repeat("a", 300)} {
		if err := ValidateUser(u); err == nil {
			t.Errorf("%q accepted", u)
		}
	}
}
