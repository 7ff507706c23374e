package portfwd

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParseSpec(t *testing.T) {
	good := map[string]Forward{
		"8080:80":             {HostIP: "127.0.0.1", HostPort: 8080, GuestPort: 80, Proto: "tcp"},
		"8080:80/tcp":         {HostIP: "127.0.0.1", HostPort: 8080, GuestPort: 80, Proto: "tcp"},
		"8080:80/TCP":         {HostIP: "127.0.0.1", HostPort: 8080, GuestPort: 80, Proto: "tcp"},
		"0.0.0.0:1:65535":     {HostIP: "0.0.0.0", HostPort: 1, GuestPort: 65535, Proto: "tcp"},
		"192.0.2.5:443:8443":  {HostIP: "192.0.2.5", HostPort: 443, GuestPort: 8443, Proto: "tcp"},
		"[::1]:8080:80/tcp":   {HostIP: "::1", HostPort: 8080, GuestPort: 80, Proto: "tcp"},
		"[2001:DB8::1]:22:22": {HostIP: "2001:db8::1", HostPort: 22, GuestPort: 22, Proto: "tcp"},
	}
	for spec, want := range good {
		got, err := ParseSpec(spec)
		if err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		if got != want {
			t.Fatalf("%s: got %+v, want %+v", spec, got, want)
		}
		back, err := ParseSpec(got.Spec())
		if err != nil || back != got {
			t.Fatalf("%s: Spec() %q does not round-trip: %+v %v", spec, got.Spec(), back, err)
		}
	}
	bad := map[string]string{
		"":                "wrong number of fields",
		"80":              "wrong number of fields",
		"8080:80/udp":     "udp is not supported",
		"8080:80/sctp":    "sctp is not supported",
		"8080:80/xyz":     "unknown protocol",
		"0:80":            `port "0"`,
		"8080:65536":      `port "65536"`,
		"-1:80":           `port "-1"`,
		"http:80":         `port "http"`,
		"localhost:80:80": `"localhost" is not an IP`,
		"::1:8080:80":     "brackets",
		"[::1:8080:80":    "unterminated",
		"[::1]8080:80":    "unterminated",
		"[::1]:8080":      "need HOSTPORT:GUESTPORT",
		"1:2:3:4":         "wrong number of fields",
	}
	for spec, want := range bad {
		_, err := ParseSpec(spec)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%q: error %v, want it to mention %q", spec, err, want)
		}
		if !strings.Contains(err.Error(), strconv.Quote(spec)) {
			t.Fatalf("%q: error %q does not name the spec", spec, err)
		}
	}
}

func TestForwardStrings(t *testing.T) {
	f := Forward{HostIP: "127.0.0.1", HostPort: 8080, GuestIP: "172.30.0.5", GuestPort: 80}
	if f.String() != "127.0.0.1:8080->80/tcp" || f.GuestAddr() != "172.30.0.5:80" {
		t.Fatalf("%s %s", f, f.GuestAddr())
	}
}

// echoServer stands in for a guest service: it echoes until EOF, then
// closes. It listens on 127.0.0.2 so guest and host addresses differ.
func echoServer(t *testing.T) (string, int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				io.Copy(c, c)
			}()
		}
	}()
	return "127.0.0.2", ln.Addr().(*net.TCPAddr).Port
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func dial(t *testing.T, port int) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// roundTrip sends msg, half-closes, and reads everything back: the echo
// only ends (and the read only returns) if the proxy passed the
// half-close through in both directions.
func roundTrip(t *testing.T, c *net.TCPConn, msg string) {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != msg {
		t.Fatalf("echo: got %q, want %q", got, msg)
	}
}

func TestForwardProxies(t *testing.T) {
	gip, gport := echoServer(t)
	m := NewManager()
	hp := freePort(t)
	fw := Forward{HostIP: "127.0.0.1", HostPort: hp, GuestIP: gip, GuestPort: gport}
	if err := m.Reserve("web", []Forward{fw}); err != nil {
		t.Fatal(err)
	}
	defer m.Release("web")

	// Connected before Activate: waits in the backlog, served after.
	early := dial(t, hp)
	if err := m.Activate("web"); err != nil {
		t.Fatal(err)
	}
	if err := m.Activate("web"); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, early, "early bird")

	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", fw.HostAddr(), 5*time.Second)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			msg := strings.Repeat(fmt.Sprint(i), 100000)
			go func() { io.WriteString(c, msg); c.(*net.TCPConn).CloseWrite() }()
			got, err := io.ReadAll(c)
			if err == nil && string(got) != msg {
				err = fmt.Errorf("conn %d: got %d bytes back, want %d", i, len(got), len(msg))
			}
			errs <- err
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	want := map[string][]Forward{"web": {{HostIP: "127.0.0.1", HostPort: hp, GuestIP: gip, GuestPort: gport, Proto: "tcp"}}}
	if got := m.List(); !reflect.DeepEqual(got, want) {
		t.Fatalf("List = %v, want %v", got, want)
	}
}

func TestGuestDownClosesClient(t *testing.T) {
	m := NewManager()
	hp, dead := freePort(t), freePort(t) // nothing listens on dead
	if err := m.Reserve("web", []Forward{{HostIP: "127.0.0.1", HostPort: hp, GuestIP: "127.0.0.1", GuestPort: dead}}); err != nil {
		t.Fatal(err)
	}
	defer m.Release("web")
	m.Activate("web")
	c := dial(t, hp)
	if n, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("read from forward to a closed guest port: n=%d err=%v, want EOF/reset", n, err)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func TestTakenPortReleasesEverything(t *testing.T) {
	m := NewManager()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	tp := taken.Addr().(*net.TCPAddr).Port
	first := freePort(t)
	err = m.Reserve("web", []Forward{
		{HostIP: "127.0.0.1", HostPort: first, GuestIP: "172.30.0.5", GuestPort: 80},
		{HostIP: "127.0.0.1", HostPort: tp, GuestIP: "172.30.0.5", GuestPort: 443},
	})
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("127.0.0.1:%d", tp)) || !strings.Contains(err.Error(), "another process") {
		t.Fatalf("Reserve with a taken port: %v", err)
	}
	// The first port was released and nothing is recorded.
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", first))
	if err != nil {
		t.Fatalf("first port still held after failed Reserve: %v", err)
	}
	ln.Close()
	if l := m.List(); len(l) != 0 {
		t.Fatalf("List after failed Reserve: %v", l)
	}
}

func TestConflictNamesOtherVM(t *testing.T) {
	m := NewManager()
	hp := freePort(t)
	if err := m.Reserve("alpha", []Forward{{HostIP: "0.0.0.0", HostPort: hp, GuestIP: "172.30.0.5", GuestPort: 80}}); err != nil {
		t.Fatal(err)
	}
	defer m.Release("alpha")
	err := m.Reserve("beta", []Forward{{HostIP: "127.0.0.1", HostPort: hp, GuestIP: "172.30.0.6", GuestPort: 80}})
	if err == nil || !strings.Contains(err.Error(), `"alpha"`) || !strings.Contains(err.Error(), fmt.Sprintf("127.0.0.1:%d", hp)) {
		t.Fatalf("conflicting Reserve: %v", err)
	}
	if err := m.Reserve("alpha", nil); err == nil {
		t.Fatal("second Reserve for the same owner accepted")
	}
	// Duplicates inside one request.
	p2 := freePort(t)
	err = m.Reserve("gamma", []Forward{
		{HostIP: "127.0.0.1", HostPort: p2, GuestIP: "172.30.0.7", GuestPort: 80},
		{HostIP: "127.0.0.1", HostPort: p2, GuestIP: "172.30.0.7", GuestPort: 81},
	})
	if err == nil || !strings.Contains(err.Error(), "same host port") {
		t.Fatalf("duplicate host port in one request: %v", err)
	}
	// Validation at the boundary for RPC callers.
	for _, f := range []Forward{
		{HostIP: "127.0.0.1", HostPort: p2, GuestIP: "", GuestPort: 80},
		{HostIP: "nope", HostPort: p2, GuestIP: "172.30.0.7", GuestPort: 80},
		{HostIP: "127.0.0.1", HostPort: 0, GuestIP: "172.30.0.7", GuestPort: 80},
		{HostIP: "127.0.0.1", HostPort: p2, GuestIP: "172.30.0.7", GuestPort: 80, Proto: "udp"},
	} {
		if err := m.Reserve("gamma", []Forward{f}); err == nil {
			t.Fatalf("%+v accepted", f)
		}
	}
	if l := m.List(); len(l) != 1 {
		t.Fatalf("List = %v, want only alpha", l)
	}
}

func TestReleaseClosesLiveConns(t *testing.T) {
	gip, gport := echoServer(t)
	m := NewManager()
	hp := freePort(t)
	if err := m.Reserve("web", []Forward{{HostIP: "127.0.0.1", HostPort: hp, GuestIP: gip, GuestPort: gport}}); err != nil {
		t.Fatal(err)
	}
	m.Activate("web")
	c := dial(t, hp)
	r := bufio.NewReader(c)
	io.WriteString(c, "ping\n")
	if line, err := r.ReadString('\n'); err != nil || line != "ping\n" {
		t.Fatalf("before Release: %q %v", line, err)
	}
	m.Release("web")
	if _, err := r.ReadString('\n'); err == nil || isTimeout(err) {
		t.Fatalf("read after Release: %v, want EOF/reset", err)
	}
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", hp))
	if err != nil {
		t.Fatalf("port still held after Release: %v", err)
	}
	ln.Close()
	if err := m.Activate("web"); err != nil {
		t.Fatalf("Activate after Release: %v", err)
	}
	m.Release("web") // unknown owner: no-op
	if l := m.List(); len(l) != 0 {
		t.Fatalf("List after Release: %v", l)
	}
	// Reserve again (VM start after stop) works.
	if err := m.Reserve("web", []Forward{{HostIP: "127.0.0.1", HostPort: hp, GuestIP: gip, GuestPort: gport}}); err != nil {
		t.Fatal(err)
	}
	m.Activate("web")
	roundTrip(t, dial(t, hp), "again")
	m.Release("web")
}

// TestActivity: an open forwarded connection is reported while it lives,
// and its close moves the last-activity time (what idle-stop reads).
func TestActivity(t *testing.T) {
	gip, gport := echoServer(t)
	m := NewManager()
	if open, last := m.Activity("web"); open != 0 || !last.IsZero() {
		t.Fatalf("unknown owner: Activity = %d, %v; want 0, zero", open, last)
	}
	hp := freePort(t)
	if err := m.Reserve("web", []Forward{{HostIP: "127.0.0.1", HostPort: hp, GuestIP: gip, GuestPort: gport}}); err != nil {
		t.Fatal(err)
	}
	defer m.Release("web")
	if err := m.Activate("web"); err != nil {
		t.Fatal(err)
	}
	if open, last := m.Activity("web"); open != 0 || !last.IsZero() {
		t.Fatalf("no connection yet: Activity = %d, %v", open, last)
	}
	c := dial(t, hp)
	// The echo answering proves the proxy tracks both sides by now.
	if _, err := io.WriteString(c, "ping"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	open, opened := m.Activity("web")
	if open != 2 || opened.IsZero() {
		t.Fatalf("one live connection: Activity = %d, %v; want 2 (client and guest side), set", open, opened)
	}
	roundTrip(t, c, "bye")
	deadline := time.Now().Add(10 * time.Second)
	for {
		open, closed := m.Activity("web")
		if open == 0 {
			if closed.Before(opened) {
				t.Fatalf("close did not move the activity time: %v before %v", closed, opened)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("connection still counted open: %d", open)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
