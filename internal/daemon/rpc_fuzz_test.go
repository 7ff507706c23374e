package daemon

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"

	"banger/api"
	"banger/internal/portfwd"
)

// FuzzReadLine reads a connection's bytes line by line as serveConn does
// and checks each answer against a plain split on '\n': a line is returned
// (without its newline and trailing "\r"s) when it has at most max bytes,
// is refused with errTooLong otherwise, and a refused line never swallows
// the next one. No call returns more than max bytes.
func FuzzReadLine(f *testing.F) {
	f.Add([]byte("{\"jsonrpc\":\"2.0\"}\n{}\n"), uint8(32), uint8(0))
	f.Add([]byte("0123456789abcdef0123456789\nnext\n"), uint8(8), uint8(0))
	f.Add([]byte("exactly8\nexactly8\r\nlonger than 8\n"), uint8(8), uint8(3))
	f.Add([]byte("123456789"), uint8(8), uint8(0)) // max+1 bytes, no newline
	f.Add([]byte("\r\n\n\r\r\n"), uint8(0), uint8(0))
	f.Add(bytes.Repeat([]byte("x"), 300), uint8(255), uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, maxB, bufB uint8) {
		max := int(maxB)
		r := bufio.NewReaderSize(bytes.NewReader(data), 16+int(bufB))
		rest := data
		for {
			var content []byte
			i := bytes.IndexByte(rest, '\n')
			ended := i >= 0
			if ended {
				content, rest = rest[:i], rest[i+1:]
			} else {
				content, rest = rest, nil
			}
			called := false
			line, err := readLine(r, max, func() { called = true })
			if len(line) > max {
				t.Fatalf("max %d: returned %d bytes", max, len(line))
			}
			if called != errors.Is(err, errTooLong) {
				t.Fatalf("tooLong called %v, err %v", called, err)
			}
			if len(content) > max {
				if !errors.Is(err, errTooLong) || line != nil {
					t.Fatalf("max %d: line of %d bytes: %q, %v; want errTooLong", max, len(content), line, err)
				}
				if ended != (err == errTooLong) {
					t.Fatalf("line ended %v, err %v", ended, err)
				}
				if !ended {
					return
				}
				continue
			}
			if want := bytes.TrimRight(content, "\r\n"); !bytes.Equal(line, want) {
				t.Fatalf("max %d: got %q, want %q", max, line, want)
			}
			if ended && err != nil || !ended && err != io.EOF {
				t.Fatalf("line ended %v: err %v", ended, err)
			}
			if !ended {
				return
			}
		}
	})
}

// FuzzDecodeParams feeds arbitrary params to the strict decoder of
// vm.create's params and of a method without params (struct{}): every
// refusal is invalid_argument (the wire's invalid params, never internal),
// and what is accepted is one JSON value whose decoding survives a round
// trip.
func FuzzDecodeParams(f *testing.F) {
	for _, s := range []string{
		``, `null`, ` null `, `{}`, `[]`, `"x"`, `{"name":"web","image":"debian-bookworm","vcpu":2,"memory_mib":512}`,
		`{"ports":["8080:80","127.0.0.1:2222:22/tcp"],"nat":true,"no_start":true}`,
		`{"cmd":["sh","-c","echo hi"],"entrypoint":[],"env":["A=1"],"working_dir":"/","user":"1000:1000","restart":"always"}`,
		`{"nmae":"x"}`, `{"name":"x"}{"name":"y"}`, `{"name":"x"} junk`, `{"vcpu":1e400}`, `{"vcpu":"2"}`,
		`{"NAME":"x","Name":"y"}`, `{"name":"\ud800"}`, "\v{}", `{"entrypoint":null}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		empty := len(bytes.Trim(data, jsonSpace)) == 0 || string(bytes.Trim(data, jsonSpace)) == "null"

		var p api.VMCreateParams
		err := decode(data, &p)
		if err != nil {
			if !api.IsKind(err, api.KindInvalidArgument) {
				t.Fatalf("decode %q: error of kind %q: %v", data, api.KindOf(err), err)
			}
		} else if empty {
			if !reflect.DeepEqual(p, api.VMCreateParams{}) {
				t.Fatalf("decode %q: empty params gave %+v", data, p)
			}
		} else {
			if !json.Valid(data) {
				t.Fatalf("decode accepted %q, which is not one JSON value", data)
			}
			b, err := json.Marshal(p)
			if err != nil {
				t.Fatal(err)
			}
			var p2 api.VMCreateParams
			if err := decode(b, &p2); err != nil {
				t.Fatalf("re-decode %s: %v", b, err)
			}
			if b2, _ := json.Marshal(p2); !bytes.Equal(b, b2) {
				t.Fatalf("round trip of %q: %s != %s", data, b, b2)
			}
		}

		var none struct{}
		err = decode(data, &none)
		if err != nil {
			if !api.IsKind(err, api.KindInvalidArgument) {
				t.Fatalf("decode %q into struct{}: error of kind %q: %v", data, api.KindOf(err), err)
			}
			return
		}
		if !empty {
			var m map[string]any
			if json.Unmarshal(data, &m) != nil || len(m) != 0 {
				t.Fatalf("a method without params accepted %q", data)
			}
		}
	})
}

// FuzzParsePorts checks vm.create's port list parser: a refusal is
// invalid_argument; an accepted list has one tcp forward per spec, ports
// 1..65535, an IP host address, no host address twice, and each forward's
// canonical spec parses back to itself.
func FuzzParsePorts(f *testing.F) {
	for _, s := range []string{
		"8080:80", "127.0.0.1:2222:22/tcp", "[::1]:8080:80", "0.0.0.0:1:65535/TCP", "8080:80,8080:81",
		"[::ffff:127.0.0.1]:80:80,127.0.0.1:80:80", "0:80", "65536:80", "1:2:3:4", "[::1:80:80", "80:80/udp",
		"localhost:80:80", "+80:0080", "", ",",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		specs := strings.Split(s, ",")
		out, err := parsePorts(specs)
		if err != nil {
			if !api.IsKind(err, api.KindInvalidArgument) {
				t.Fatalf("parsePorts(%q): error of kind %q: %v", specs, api.KindOf(err), err)
			}
			return
		}
		if len(out) != len(specs) {
			t.Fatalf("parsePorts(%q): %d forwards", specs, len(out))
		}
		seen := map[string]bool{}
		for i, pf := range out {
			if pf.HostPort < 1 || pf.HostPort > 65535 || pf.GuestPort < 1 || pf.GuestPort > 65535 {
				t.Fatalf("spec %q: ports %d -> %d", specs[i], pf.HostPort, pf.GuestPort)
			}
			if pf.Protocol != "tcp" {
				t.Fatalf("spec %q: protocol %q", specs[i], pf.Protocol)
			}
			fw := portfwd.Forward{HostIP: pf.HostIP, HostPort: pf.HostPort, GuestPort: pf.GuestPort, Proto: pf.Protocol}
			if seen[fw.HostAddr()] {
				t.Fatalf("%q: host address %s twice", specs, fw.HostAddr())
			}
			seen[fw.HostAddr()] = true
			back, err := portfwd.ParseSpec(fw.Spec())
			if err != nil || back != fw {
				t.Fatalf("spec %q: canonical %q parses to %+v, %v", specs[i], fw.Spec(), back, err)
			}
		}
	})
}
