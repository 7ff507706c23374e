package hostnet

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"sort"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"banger/internal/testenv"
)

// InNewNetns runs fn on an OS thread moved into a fresh, named network
// namespace that is deleted after the test. The thread is never unlocked,
// so Go discards it instead of reusing it in the wrong namespace. Every
// test that touches interfaces goes through here: the host's own network
// is never changed.
func inNewNetns(t *testing.T, fn func()) {
	t.Helper()
	testenv.RequireRoot(t, "to create a network namespace")
	name := fmt.Sprintf("bgr-hostnet-%d", os.Getpid())
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		ns, err := netns.NewNamed(name)
		if err != nil {
			done <- err
			return
		}
		t.Cleanup(func() { netns.DeleteNamed(name) })
		defer ns.Close()
		fn()
		done <- nil
	}()
	if err := <-done; err != nil {
		testenv.Skip(t, "cannot create a network namespace: %v", err)
	}
}

func TestBridgeAndTaps(t *testing.T) {
	inNewNetns(t, func() {
		const br = DefaultBridgeName
		if err := EnsureBridge(br, "172.30.9.1/24"); err != nil {
			t.Error(err)
			return
		}
		// Idempotent.
		if err := EnsureBridge(br, "172.30.9.1/24"); err != nil {
			t.Errorf("second EnsureBridge: %v", err)
		}
		link, err := netlink.LinkByName(br)
		if err != nil || link.Type() != "bridge" || link.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("bridge %v: %+v", err, link)
			return
		}
		addrs, _ := netlink.AddrList(link, netlink.FAMILY_V4)
		if len(addrs) != 1 || addrs[0].IPNet.String() != "172.30.9.1/24" {
			t.Errorf("bridge addresses %v, want 172.30.9.1/24 once", addrs)
		}

		tap := TapName("vm-one")
		for i := 0; i < 2; i++ { // the second call reuses the tap
			if err := CreateTap(tap, br); err != nil {
				t.Errorf("CreateTap #%d: %v", i, err)
				return
			}
		}
		tl, err := netlink.LinkByName(tap)
		if err != nil {
			t.Error(err)
			return
		}
		tt, ok := tl.(*netlink.Tuntap)
		if !ok || tt.Mode != netlink.TUNTAP_MODE_TAP || tt.Flags&netlink.TUNTAP_MULTI_QUEUE != 0 {
			t.Errorf("tap %+v: want a single-queue tap", tl)
		}
		if tl.Attrs().MasterIndex != link.Attrs().Index {
			t.Errorf("tap master %d, want bridge %d", tl.Attrs().MasterIndex, link.Attrs().Index)
		}
		if tl.Attrs().RawFlags&uint32(1) == 0 { // IFF_UP
			t.Errorf("tap not up")
		}
		tap2 := TapName("vm-two")
		if err := CreateTap(tap2, br); err != nil {
			t.Error(err)
		}
		// Not a tap: ignored by ListTaps, refused by DeleteTap.
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: TapPrefix + "nottap"}}); err != nil {
			t.Error(err)
			return
		}
		got, err := ListTaps(TapPrefix)
		sort.Strings(got)
		want := []string{tap, tap2}
		sort.Strings(want)
		if err != nil || strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("ListTaps = %v, %v; want %v", got, err, want)
		}
		if err := DeleteTap(TapPrefix + "nottap"); err == nil {
			t.Errorf("DeleteTap deleted a bridge")
		}
		if err := CreateTap(TapPrefix+"nottap", br); err == nil {
			t.Errorf("CreateTap reused a non-tap link")
		}
		for _, n := range []string{tap, tap2} {
			if err := DeleteTap(n); err != nil {
				t.Error(err)
			}
		}
		if err := DeleteTap(tap); err != nil {
			t.Errorf("DeleteTap of a missing tap: %v", err)
		}
		if got, _ := ListTaps(TapPrefix); len(got) != 0 {
			t.Errorf("taps left: %v", got)
		}
		if err := CreateTap("bgrx", "nobridge"); err == nil || !strings.Contains(err.Error(), "nobridge") {
			t.Errorf("CreateTap without a bridge: %v", err)
		}
		if err := EnsureBridge(tap2, "172.30.9.1/24"); err != nil {
			t.Error(err) // tap2 was deleted: this creates a bridge by that name
		}
		if err := CreateTap(tap, br); err != nil {
			t.Error(err)
		}
		if err := EnsureBridge(tap, "172.30.9.1/24"); err == nil {
			t.Errorf("EnsureBridge accepted a tap as bridge")
		}
	})
}

func TestBadInput(t *testing.T) {
	for _, c := range []struct{ name, cidr string }{
		{"", DefaultBridgeCIDR},
		{"waytoolongbridgename", DefaultBridgeCIDR},
		{"br0", "172.30.0.1"},
		{"br0", "fd00::1/64"},
		{"br0", "nonsense"},
	} {
		if err := EnsureBridge(c.name, c.cidr); err == nil {
			t.Errorf("EnsureBridge(%q, %q) accepted", c.name, c.cidr)
		}
	}
	if err := CreateTap("a/b", "br0"); err == nil {
		t.Errorf("CreateTap accepted a/b")
	}
}

func TestNames(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		n := TapName(fmt.Sprintf("id-%d", i))
		if len(n) > 15 || !strings.HasPrefix(n, TapPrefix) || seen[n] {
			t.Fatalf("TapName %q: too long, wrong prefix or duplicate", n)
		}
		seen[n] = true
	}
	if TapName("x") != TapName("x") {
		t.Fatal("TapName not stable")
	}

	_, subnet, _ := net.ParseCIDR("172.30.0.0/16")
	macs, cids := map[string]bool{}, map[uint32]bool{}
	for ip := subnet.IP.Mask(subnet.Mask); subnet.Contains(ip); ip = next(ip) {
		mac, cid := MACFromIP(ip), DefaultVSockCID(ip)
		hw, err := net.ParseMAC(mac)
		if err != nil || hw[0]&1 != 0 || hw[0]&2 == 0 {
			t.Fatalf("MACFromIP(%s) = %q: want a unicast, locally administered MAC", ip, mac)
		}
		if macs[mac] || cids[cid] || cid < 3 {
			t.Fatalf("%s: duplicate MAC %s or CID %d (or CID < 3)", ip, mac, cid)
		}
		macs[mac], cids[cid] = true, true
	}
	if MACFromIP(net.ParseIP("172.30.0.2")) != "02:42:ac:1e:00:02" {
		t.Errorf("MACFromIP(172.30.0.2) = %s", MACFromIP(net.ParseIP("172.30.0.2")))
	}
	if DefaultVSockCID(net.ParseIP("172.30.0.2")) != 0x10002 {
		t.Errorf("DefaultVSockCID(172.30.0.2) = %#x", DefaultVSockCID(net.ParseIP("172.30.0.2")))
	}
	if MACFromIP(net.ParseIP("fd00::1")) != "" || DefaultVSockCID(nil) != 0 {
		t.Errorf("non-IPv4 input gave a MAC or CID")
	}
}

func next(ip net.IP) net.IP {
	n := append(net.IP(nil), ip.To4()...)
	for i := len(n) - 1; i >= 0; i-- {
		n[i]++
		if n[i] != 0 {
			break
		}
	}
	return n
}

// TestBridgeMACStable: the bridge's MAC is fixed, so taps joining and
// leaving never change the guests' gateway MAC.
func TestBridgeMACStable(t *testing.T) {
	inNewNetns(t, func() {
		if err := EnsureBridge("brmac", "172.30.8.1/24"); err != nil {
			t.Error(err)
			return
		}
		want := MACFromIP(net.ParseIP("172.30.8.1"))
		mac := func() string {
			l, err := netlink.LinkByName("brmac")
			if err != nil {
				return err.Error()
			}
			return l.Attrs().HardwareAddr.String()
		}
		if got := mac(); got != want {
			t.Errorf("bridge MAC %s, want %s", got, want)
		}
		for _, tap := range []string{"bgrmac1", "bgrmac2"} {
			if err := CreateTap(tap, "brmac"); err != nil {
				t.Error(err)
				return
			}
		}
		DeleteTap("bgrmac1")
		if got := mac(); got != want {
			t.Errorf("bridge MAC moved to %s after tap changes", got)
		}
	})
}
