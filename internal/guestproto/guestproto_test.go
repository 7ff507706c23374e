package guestproto

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseCmdline(t *testing.T) {
	line := "console=ttyS0 reboot=t banger.ip=172.16.0.2/24 banger.gw=172.16.0.1 " +
		"banger.dns=172.16.0.1,9.9.9.9 banger.hostname=web-1 banger.agent=serial banger.modules=6.1.0-27-cloud-amd64 banger.time=1767225600.000000042 " +
		"banger.share=virtiofs,banger0,rw,/mnt/src banger.share=9p,banger1,ro,/root/data quiet\n"
	c, err := ParseCmdline(line)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		IP:       netip.MustParsePrefix("172.16.0.2/24"),
		Gateway:  netip.MustParseAddr("172.16.0.1"),
		DNS:      []netip.Addr{netip.MustParseAddr("172.16.0.1"), netip.MustParseAddr("9.9.9.9")},
		Hostname: "web-1",
		Agent:    AgentSerial,
		Modules:  "6.1.0-27-cloud-amd64",
		Time:     time.Unix(1767225600, 42).UTC(),
		Shares: []ShareMount{
			{Transport: ShareVirtiofs, Tag: "banger0", Path: "/mnt/src"},
			{Transport: Share9p, Tag: "banger1", ReadOnly: true, Path: "/root/data"},
		},
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got %+v\nwant %+v", c, want)
	}
	// Round trip through Args.
	c2, err := ParseCmdline(strings.Join(c.Args(), " "))
	if err != nil || !reflect.DeepEqual(c2, want) {
		t.Fatalf("round trip: %+v, %v", c2, err)
	}
}

func TestParseCmdlineEmpty(t *testing.T) {
	c, err := ParseCmdline("console=ttyS0 ip=dhcp")
	if err != nil {
		t.Fatal(err)
	}
	if c.IP.IsValid() || c.Agent != "" || c.Hostname != "" || len(c.Args()) != 0 {
		t.Fatalf("want empty config, got %+v", c)
	}
}

func TestParseCmdlineErrors(t *testing.T) {
	for _, bad := range []string{
		"banger.ip=172.16.0.2",
		"banger.ip=fe80::1/64",
		"banger.gw=nope banger.ip=1.2.3.4/24",
		"banger.gw=1.2.3.1",
		"banger.dns=1.1.1.1,x",
		"banger.hostname=Bad_Name",
		"banger.agent=tcp",
		"banger.init=sbin/init",
		"banger.init=/sbin/init",
		"banger.modules=../etc",
		"banger.modules=6.1/x",
		"banger.modules=",
		"banger.time=",
		"banger.time=-5",
		"banger.time=1767225600.",
		"banger.time=1767225600.1234567890",
		"banger.time=1e9",
		"banger.time=0.5",
		"banger.time=99999999999",
		"banger.time=1767225600.12a",
		"banger.share=nfs,banger0,rw,/mnt",
		"banger.share=virtiofs,share0,rw,/mnt",
		"banger.share=virtiofs,banger0,rx,/mnt",
		"banger.share=virtiofs,banger0,rw,mnt",
		"banger.share=virtiofs,banger0,rw,/",
		"banger.share=virtiofs,banger0,rw,/mnt/../etc",
		"banger.share=virtiofs,banger0,rw,/proc/x",
		"banger.share=virtiofs,banger0,rw",
	} {
		_, err := ParseCmdline(bad)
		if err == nil {
			t.Errorf("%q: want error", bad)
			continue
		}
		key, val, _ := strings.Cut(strings.Fields(bad)[0], "=")
		if !strings.Contains(err.Error(), key) || (!strings.Contains(err.Error(), val) && key != "banger.gw") {
			t.Errorf("%q: error %q does not name the bad key and value", bad, err)
		}
	}
}

func TestUnixTime(t *testing.T) {
	for _, c := range []struct {
		in   string
		want time.Time
	}{
		{"1767225600", time.Unix(1767225600, 0)},
		{"1767225600.5", time.Unix(1767225600, 500000000)},
		{"1767225600.000000001", time.Unix(1767225600, 1)},
	} {
		got, err := parseUnixTime(c.in)
		if err != nil || !got.Equal(c.want) {
			t.Errorf("parseUnixTime(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	now := time.Now()
	if got, err := parseUnixTime(FormatUnixTime(now)); err != nil || !got.Equal(now) {
		t.Errorf("round trip of %v: %v, %v", now, got, err)
	}
}

func TestEncodeTime(t *testing.T) {
	now := time.Now()
	b := EncodeTime(now)
	if len(b) != 8 {
		t.Fatalf("%d bytes", len(b))
	}
	if got, err := DecodeTime(b); err != nil || !got.Equal(now) {
		t.Fatalf("round trip of %v: %v, %v", now, got, err)
	}
	for _, bad := range [][]byte{nil, make([]byte, 7), make([]byte, 9), make([]byte, 8),
		EncodeTime(time.Date(1999, 12, 31, 0, 0, 0, 0, time.UTC)), EncodeTime(time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)),
		{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}} {
		if _, err := DecodeTime(bad); err == nil {
			t.Errorf("DecodeTime(%x): want error", bad)
		}
	}
}

func TestInitModeOnCmdline(t *testing.T) {
	for _, m := range []string{InitBanger, InitImage, InitAuto} {
		c, err := ParseCmdline(KeyInit + "=" + m)
		if err != nil || c.Init != m {
			t.Fatalf("%s: %+v %v", m, c, err)
		}
		if got := strings.Join(c.Args(), " "); got != KeyInit+"="+m {
			t.Fatalf("Args() = %q", got)
		}
	}
	for _, bad := range []string{"/sbin/init", "systemd", "", "Auto"} {
		if _, err := ParseCmdline(KeyInit + "=" + bad); err == nil || !strings.Contains(err.Error(), KeyInit) {
			t.Errorf("%q: want an error naming %s, got %v", bad, KeyInit, err)
		}
	}
}
