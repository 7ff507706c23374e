package guestproto

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzParseCmdline: a command line banger-init accepts renders back
// through Config.Args to a command line that parses to the same Config,
// with every value inside its rule; a refusal names the banger.* key.
func FuzzParseCmdline(f *testing.F) {
	for _, s := range []string{
		"console=ttyS0 reboot=t banger.ip=172.16.0.2/24 banger.gw=172.16.0.1 banger.dns=172.16.0.1,9.9.9.9 " +
			"banger.hostname=web-1 banger.agent=serial banger.modules=6.1.0-27-cloud-amd64 banger.time=1767225600.000000042 quiet",
		"banger.init=auto banger.agent=vsock", "banger.gw=10.0.0.1", "banger.ip=::1/64", "banger.dns=fe80::1%eth0,,1.1.1.1",
		"banger.time=946684800", "banger.time=7258118400.1", "banger.hostname=-x", "banger.modules=../x", "banger.dns=",
		"banger.ip=10.0.0.9/8 banger.ip=10.0.0.1/33", "banger.unknown=1 banger. =", "banger.time=99999999999.999999999",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		c, err := ParseCmdline(line)
		if err != nil {
			if !strings.Contains(err.Error(), "banger.") {
				t.Fatalf("ParseCmdline(%q): error names no key: %v", line, err)
			}
			return
		}
		if c.IP.IsValid() && !c.IP.Addr().Is4() || c.Gateway.IsValid() && (!c.Gateway.Is4() || !c.IP.IsValid()) {
			t.Fatalf("ParseCmdline(%q): ip %v gw %v", line, c.IP, c.Gateway)
		}
		if c.Hostname != "" && !hostnameRE.MatchString(c.Hostname) || c.Modules != "" && !ValidRelease(c.Modules) {
			t.Fatalf("ParseCmdline(%q): hostname %q modules %q", line, c.Hostname, c.Modules)
		}
		if c.Agent != "" && c.Agent != AgentVsock && c.Agent != AgentSerial || c.Init != "" && ValidateInitMode(c.Init) != nil {
			t.Fatalf("ParseCmdline(%q): agent %q init %q", line, c.Agent, c.Init)
		}
		if !c.Time.IsZero() && checkClock(c.Time) != nil {
			t.Fatalf("ParseCmdline(%q): time %v", line, c.Time)
		}
		args := c.Args()
		c2, err := ParseCmdline(strings.Join(args, " "))
		if err != nil || !reflect.DeepEqual(c, c2) {
			t.Fatalf("ParseCmdline(%q) = %+v; Args %q parse to %+v, %v", line, c, args, c2, err)
		}
	})
}

// FuzzDecodeTime: SetTimeRequest's payload (from the host) and reply (from
// the guest). Accepted: exactly 8 bytes, a time in 2000..2200 that
// EncodeTime renders to the same bytes.
func FuzzDecodeTime(f *testing.F) {
	f.Add(EncodeTime(time.Date(2026, 11, 27, 0, 0, 0, 1, time.UTC)))
	f.Add(EncodeTime(minClock))
	f.Add(EncodeTime(maxClock))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		tm, err := DecodeTime(b)
		if err != nil {
			return
		}
		if len(b) != 8 || checkClock(tm) != nil || tm.Location() != time.UTC {
			t.Fatalf("DecodeTime(%x) = %v", b, tm)
		}
		if e := EncodeTime(tm); !bytes.Equal(e, b) {
			t.Fatalf("DecodeTime(%x) = %v, which encodes to %x", b, tm, e)
		}
	})
}

// FuzzParseExitRecord: the host's parse of a file the guest wrote.
// Accepted: at most MaxExitFileBytes, a status 0..255 that ExitRecord
// renders to a record parsing to the same status.
func FuzzParseExitRecord(f *testing.F) {
	for _, s := range []string{"status 0\n", "status 255\n", "status 256\n", "status -1\n", "status +7", " status 3 \n",
		"status 00000000000000000000000000000000000000000000000000000042", "status 9223372036854775808", "stat", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := ParseExitRecord(b)
		if err != nil {
			return
		}
		if n < 0 || n > 255 || len(b) > MaxExitFileBytes {
			t.Fatalf("ParseExitRecord(%q) = %d", b, n)
		}
		if m, err := ParseExitRecord([]byte(ExitRecord(n))); err != nil || m != n {
			t.Fatalf("ExitRecord(%d) parses to %d, %v", n, m, err)
		}
	})
}

// FuzzDecodeSetup: the guest's parse of the host's Setup. Accepted: every
// field inside its documented bound, and the Setup survives a JSON round
// trip unchanged.
func FuzzDecodeSetup(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"env":["A=1","PATH=/usr/bin:/bin"],"main":{"argv":["/bin/sh","-c","echo hi"],"working_dir":"/srv","user":"1000:1000","restart":"on-failure"}}`,
		`{"env":[]}`, `{"main":{"argv":[]}}`, `{"main":{"argv":[""]}}`, `{"env":["1A=x"]}`, `{"env":["A=\u0000"]}`,
		`{"main":{"argv":["x"],"working_dir":"rel"}}`, `{"main":{"argv":["x"],"user":"a:b:c"}}`, `{"main":{"argv":["x"],"restart":"sometimes"}}`,
		`{"ENV":["A=1"],"Main":null}`, `{"env":["A=\ud800"]}`, `null`, `[]`, `{"env":["A=<&>"]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeSetup(b)
		if err != nil {
			return
		}
		checkSetupBounds(t, s)
		re, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		// Escapes can make the re-encoding larger than the input (and than
		// MaxSetupBytes); the content must still be the same Setup.
		var s2 Setup
		if err := json.Unmarshal(re, &s2); err != nil || s2.Validate() != nil {
			t.Fatalf("re-decode %s: %v %v", re, err, s2.Validate())
		}
		if len(re) <= MaxSetupBytes {
			if s2, err = DecodeSetup(re); err != nil {
				t.Fatalf("DecodeSetup(%s): %v", re, err)
			}
		}
		if !reflect.DeepEqual(normSetup(s), normSetup(s2)) {
			t.Fatalf("DecodeSetup(%.200q) = %+v; round trip %+v", b, s, s2)
		}
	})
}

func checkSetupBounds(t *testing.T, s Setup) {
	t.Helper()
	if len(s.Env) > MaxEnvEntries {
		t.Fatalf("%d env entries", len(s.Env))
	}
	for _, kv := range s.Env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" || len(k) > MaxEnvNameBytes || len(v) > MaxEnvValueBytes || strings.IndexByte(v, 0) >= 0 {
			t.Fatalf("env entry %q", kv)
		}
	}
	if m := s.Main; m != nil {
		if len(m.Argv) == 0 || len(m.Argv) > MaxArgs || m.Argv[0] == "" {
			t.Fatalf("argv %q", m.Argv)
		}
		for _, a := range m.Argv {
			if len(a) > MaxArgBytes || strings.IndexByte(a, 0) >= 0 {
				t.Fatalf("argument %q", a)
			}
		}
		if len(m.WorkingDir) > MaxPathBytes || m.WorkingDir != "" && m.WorkingDir[0] != '/' || len(m.User) > MaxUserBytes {
			t.Fatalf("working dir %q user %q", m.WorkingDir, m.User)
		}
		if ValidateRestart(m.Restart) != nil {
			t.Fatalf("restart %q", m.Restart)
		}
	}
}

// normSetup drops the difference between an empty and an absent env,
// which omitempty does not keep.
func normSetup(s Setup) Setup {
	if len(s.Env) == 0 {
		s.Env = nil
	}
	return s
}

// FuzzDecodeSetupReply: the host's parse of the guest's reply. Accepted:
// init is banger or image, init_path at most MaxPathBytes and valid
// UTF-8, and the reply survives a JSON round trip unchanged.
func FuzzDecodeSetupReply(f *testing.F) {
	for _, s := range []string{
		`{"init":"banger"}`, `{"init":"image","init_path":"/lib/systemd/systemd"}`, `{"init":"auto"}`, `{}`, `null`,
		`{"init":"image","init_path":"` + strings.Repeat("\xff", 1400) + `"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeSetupReply(b)
		if err != nil {
			return
		}
		if r.Init != InitBanger && r.Init != InitImage || len(r.InitPath) > MaxPathBytes || !utf8.ValidString(r.InitPath) {
			t.Fatalf("DecodeSetupReply(%.200q) = %+v", b, r)
		}
		re, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var r2 SetupReply
		if err := json.Unmarshal(re, &r2); err != nil || r2 != r {
			t.Fatalf("DecodeSetupReply(%.200q) = %+v; round trip %+v, %v", b, r, r2, err)
		}
	})
}
