package model

import (
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	good := map[string]int64{
		"512M": 512 << 20, "2G": 2 << 30, "1.5GiB": 3 << 29, "1048576": 1048576,
		"4k": 4096, "1T": 1 << 40, "10MB": 10 << 20, " 3G ": 3 << 30, "1.5K": 1536, "2b": 2,
	}
	for in, want := range good {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	bad := []string{"", "0", "0G", "-1G", "-5", "abc", "1X", "1.2.3G", ".5G", "5.G", "G", "99999999999T",
		"9223372036854775808", "1e9", "0.0001K", "1 G B", "1GiBx"}
	for _, in := range bad {
		if v, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want error", in, v)
		} else if !strings.Contains(err.Error(), in) {
			t.Errorf("ParseSize(%q) error %q does not name the value", in, err)
		}
	}
}

func TestValidateVMName(t *testing.T) {
	for _, ok := range []string{"a", "web", "web-1", "0", strings.Repeat("a", 63), "a-b-c"} {
		if err := ValidateVMName(ok); err != nil {
			t.Errorf("ValidateVMName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-a", "a-", "Bad_Name", "UPPER", "a.b", "a b", strings.Repeat("a", 64), "ünï", "a/b", "a\x00"} {
		err := ValidateVMName(bad)
		if err == nil {
			t.Errorf("ValidateVMName(%q) accepted", bad)
		} else if !strings.Contains(err.Error(), "invalid VM name") {
			t.Errorf("ValidateVMName(%q) = %v", bad, err)
		}
	}
}

func TestNewID(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		id := NewID()
		if len(id) != 32 || seen[id] {
			t.Fatalf("bad or duplicate id %q", id)
		}
		seen[id] = true
	}
}

func TestFormatSize(t *testing.T) {
	for n, want := range map[int64]string{512: "512B", 1536: "1.5K", 2 << 30: "2G", 5 << 40: "5T"} {
		if got := FormatSize(n); got != want {
			t.Errorf("FormatSize(%d) = %q want %q", n, got, want)
		}
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"512M", "1.5GiB", "-1G", "0", "99999999999999T", "1.", "k"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseSize(s)
		if err == nil && v <= 0 {
			t.Fatalf("ParseSize(%q) = %d without error", s, v)
		}
		if err != nil && !strings.Contains(err.Error(), "invalid size") {
			t.Fatalf("ParseSize(%q) error %q", s, err)
		}
	})
}

func FuzzValidateVMName(f *testing.F) {
	for _, s := range []string{"web", "-x", "Bad_Name", strings.Repeat("z", 64)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidateVMName(s) != nil {
			return
		}
		if len(s) < 1 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
			t.Fatalf("accepted %q", s)
		}
		for _, c := range s {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				t.Fatalf("accepted %q with %q", s, c)
			}
		}
	})
}

func TestGenerateVMNameIsValid(t *testing.T) {
	for i := 0; i < 100; i++ {
		if n := GenerateVMName(); ValidateVMName(n) != nil {
			t.Fatalf("generated %q is not a valid VM name: %v", n, ValidateVMName(n))
		}
	}
}
