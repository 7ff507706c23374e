package guestproto

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestParseCmdline(t *testing.T) {
	line := "console=ttyS0 reboot=t banger.ip=172.16.0.2/24 banger.gw=172.16.0.1 " +
		"banger.dns=172.16.0.1,9.9.9.9 banger.hostname=web-1 banger.agent=serial banger.modules=6.1.0-27-cloud-amd64 quiet\n"
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
