package model

import (
	"strings"
	"testing"
)

func TestParseShare(t *testing.T) {
	for in, want := range map[string]Share{
		"/srv/src:/mnt/src":      {HostPath: "/srv/src", GuestPath: "/mnt/src"},
		"/srv/src/:/mnt/src:ro":  {HostPath: "/srv/src", GuestPath: "/mnt/src", ReadOnly: true},
		"/srv/a/../b:/root/b:rw": {HostPath: "/srv/b", GuestPath: "/root/b"},
	} {
		got, err := ParseShare(in)
		if err != nil || got.HostPath != want.HostPath || got.GuestPath != want.GuestPath || got.ReadOnly != want.ReadOnly {
			t.Errorf("%q: got %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"/srv", "srv:/mnt", "/srv:/mnt:rx", "/srv:mnt", "/srv:/", "/srv:/proc/x", "/a:b:/mnt", "/srv:/mnt/a b", "/srv:/root"} {
		if _, err := ParseShare(bad); err == nil || !strings.Contains(err.Error(), bad) && !strings.Contains(err.Error(), "/root") {
			t.Errorf("%q: want an error naming it, got %v", bad, err)
		}
	}
}

func TestCheckShares(t *testing.T) {
	ok := []Share{{GuestPath: "/mnt/a"}, {GuestPath: "/mnt/ab"}}
	if err := CheckShares(ok); err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][]Share{
		{{GuestPath: "/mnt/a"}, {GuestPath: "/mnt/a"}},
		{{GuestPath: "/mnt/a"}, {GuestPath: "/mnt/a/b"}},
		make([]Share, MaxShares+1),
	} {
		if err := CheckShares(bad); err == nil {
			t.Errorf("%+v: want error", bad)
		}
	}
}
