package guestproto

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestIdentityValidate(t *testing.T) {
	good := func() Identity {
		return Identity{Hostname: "fk", IP: netip.MustParsePrefix("10.0.0.5/24"), Gateway: netip.MustParseAddr("10.0.0.1"),
			DNS: []netip.Addr{netip.MustParseAddr("10.0.0.1")}, MAC: "02:42:0a:00:00:05",
			Time: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), Entropy: make([]byte, 64)}
	}
	for _, c := range []struct {
		name string
		mut  func(*Identity)
		want string
	}{
		{"ok", func(*Identity) {}, ""},
		{"no network", func(id *Identity) { id.IP, id.Gateway, id.DNS, id.MAC = netip.Prefix{}, netip.Addr{}, nil, "" }, ""},
		{"hostname", func(id *Identity) { id.Hostname = "Bad_Name" }, "hostname"},
		{"ipv6", func(id *Identity) { id.IP = netip.MustParsePrefix("fd00::5/64") }, "IPv4"},
		{"gateway without ip", func(id *Identity) { id.IP = netip.Prefix{} }, "gateway"},
		{"multicast mac", func(id *Identity) { id.MAC = "01:00:5e:00:00:01" }, "MAC"},
		{"bad mac", func(id *Identity) { id.MAC = "nope" }, "MAC"},
		{"clock", func(id *Identity) { id.Time = time.Unix(0, 0) }, "time"},
		{"little entropy", func(id *Identity) { id.Entropy = make([]byte, 8) }, "entropy"},
		{"much entropy", func(id *Identity) { id.Entropy = make([]byte, 4096) }, "entropy"},
	} {
		id := good()
		c.mut(&id)
		b, _ := json.Marshal(id)
		_, err := DecodeIdentity(b)
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	if _, err := DecodeIdentity(make([]byte, MaxIdentityBytes+1)); err == nil {
		t.Error("oversized payload accepted")
	}
	if _, err := DecodeIdentityReply([]byte(`{"host_key":"nonsense"}`)); err == nil {
		t.Error("reply without a key accepted")
	}
}
