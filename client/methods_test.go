package client

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"banger/api"
	"banger/internal/daemon"
)

// TestEveryMethodHasAClientMethod: each method in the daemon's table maps
// to a Client method that exists, and the map names no method the daemon
// does not serve.
func TestEveryMethodHasAClientMethod(t *testing.T) {
	ct := reflect.TypeFor[*Client]()
	served := map[string]bool{}
	for _, m := range daemon.Methods() {
		served[m.Name] = true
		name, ok := rpcMethods[m.Name]
		if !ok {
			t.Errorf("daemon method %s has no client method: add one to client/methods.go and to rpcMethods", m.Name)
			continue
		}
		if _, ok := ct.MethodByName(name); !ok {
			t.Errorf("rpcMethods maps %s to Client.%s, which does not exist", m.Name, name)
		}
	}
	for name := range rpcMethods {
		if !served[name] {
			t.Errorf("rpcMethods names %s, which the daemon does not serve", name)
		}
	}
	if len(served) < 30 {
		t.Fatalf("daemon.Methods() returned %d methods: the table was not read", len(served))
	}
}

func TestVersionError(t *testing.T) {
	old := (&VersionError{Client: 2, Daemon: 1, DaemonVersion: "v0.1"}).Error()
	newer := (&VersionError{Client: 1, Daemon: 2, DaemonVersion: "v0.9"}).Error()
	for _, s := range []string{old, newer} {
		t.Log(s)
	}
	if want := "upgrade the daemon"; !contains(old, want) {
		t.Errorf("older daemon: %q lacks %q", old, want)
	}
	if want := "upgrade this client"; !contains(newer, want) {
		t.Errorf("newer daemon: %q lacks %q", newer, want)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// TestConnectRefusesOtherProtocol: a daemon that reports another protocol
// version (a stand-in answering daemon.ping as an older daemon would, the
// one fault here no real daemon of this tree can produce) makes Connect
// fail with a *VersionError; the same protocol connects.
func TestConnectRefusesOtherProtocol(t *testing.T) {
	for _, tc := range []struct {
		protocol int
		ok       bool
	}{{0, false}, {ProtocolVersion + 1, false}, {ProtocolVersion, true}} {
		sock := filepath.Join(t.TempDir(), "d.sock")
		l, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				conn, err := l.Accept()
				if err != nil {
					return
				}
				var req api.Request
				json.NewDecoder(conn).Decode(&req)
				res, _ := json.Marshal(api.PingResult{Version: "vX", Protocol: tc.protocol})
				b, _ := json.Marshal(api.Response{JSONRPC: "2.0", ID: req.ID, Result: res})
				conn.Write(append(b, '\n'))
				conn.Close()
			}
		}()
		_, err = Connect(context.Background(), sock)
		l.Close()
		var ve *VersionError
		switch {
		case tc.ok && err != nil:
			t.Errorf("protocol %d: %v", tc.protocol, err)
		case !tc.ok && !errors.As(err, &ve):
			t.Errorf("protocol %d: got %v, want a *VersionError", tc.protocol, err)
		case !tc.ok && (ve.Daemon != tc.protocol || ve.Client != ProtocolVersion):
			t.Errorf("protocol %d: %+v", tc.protocol, ve)
		}
	}
}
