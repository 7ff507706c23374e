package instance

import (
	"strings"
	"testing"
)

// Two state dirs never share a tap, a table or a VM runtime dir, and
// neither owns the other's taps; the default state dir keeps the
// historical names.
func TestNamesPerStateDir(t *testing.T) {
	def := For(DefaultStateDir)
	if def.Tag != "" || def.TapPrefix != "bgr" || def.Table != "banger" || def.VMRunDir != "vms" {
		t.Fatalf("default instance: %+v", def)
	}
	if For(DefaultStateDir+"/") != def || For("/var/lib/../lib/banger") != def {
		t.Fatal("equal state dirs give different names")
	}
	a, b := For("/srv/banger-a"), For("/srv/banger-b")
	all := []Names{def, a, b}
	for i, x := range all {
		tap := x.TapName("0123456789abcdef")
		if len(tap) != 15 || !strings.HasPrefix(tap, x.TapPrefix) || !x.OwnsTap(tap) {
			t.Fatalf("%+v: tap %q", x, tap)
		}
		for j, y := range all {
			if i == j {
				continue
			}
			if x.Table == y.Table || x.VMRunDir == y.VMRunDir || x.TapPrefix == y.TapPrefix {
				t.Fatalf("instances share a name: %+v %+v", x, y)
			}
			if y.OwnsTap(tap) || strings.HasPrefix(tap, y.TapPrefix) {
				t.Fatalf("%+v owns or matches %+v's tap %q", y, x, tap)
			}
		}
	}
	if def.OwnsTap("bgrnothex000000") || a.OwnsTap("eth0") || a.OwnsTap("") {
		t.Fatal("owns a name that is no tap of its")
	}
	seen := map[string]bool{}
	for i := 0; i < 2000; i++ {
		n := a.TapName(strings.Repeat("x", i))
		if seen[n] {
			t.Fatalf("TapName collides at %d", i)
		}
		seen[n] = true
	}
}
