package model

import (
	"fmt"
	"math"
	"math/big"
	"strings"
)

// ValidateVMName checks that name is a DNS label: 1–63 characters of a-z,
// 0-9 and '-', not starting or ending with '-'. VM names become `<name>.vm`
// DNS names and hostnames, so nothing looser is safe.
func ValidateVMName(name string) error {
	if name == "" {
		return fmt.Errorf("invalid VM name %q: must not be empty", name)
	}
	if len(name) > 63 {
		return fmt.Errorf("invalid VM name %q: longer than 63 characters", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("invalid VM name %q: only lowercase letters, digits and '-' are allowed (found %q)", name, string(rune(c)))
		}
	}
	if name[0] == '-' || name[len(name)-1] == '-' {
		return fmt.Errorf("invalid VM name %q: must not start or end with '-'", name)
	}
	return nil
}

var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10,
	"m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
	"g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
	"t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40,
}

// ParseSize parses a byte size such as "512M", "2G", "1.5GiB" or "1048576".
// Units are binary (K=1024). Zero, negative, overflowing and malformed values
// are errors that name the value.
func ParseSize(s string) (int64, error) {
	in := strings.TrimSpace(s)
	if in == "" {
		return 0, fmt.Errorf("invalid size %q: empty", s)
	}
	i := 0
	for i < len(in) && (in[i] >= '0' && in[i] <= '9' || in[i] == '.') {
		i++
	}
	num, unit := in[:i], strings.ToLower(strings.TrimSpace(in[i:]))
	if strings.HasPrefix(in, "-") {
		return 0, fmt.Errorf("invalid size %q: must be positive", s)
	}
	if num == "" || strings.Count(num, ".") > 1 || num == "." || strings.HasSuffix(num, ".") || strings.HasPrefix(num, ".") {
		return 0, fmt.Errorf("invalid size %q: expected a number with an optional unit (K, M, G, T), e.g. 512M or 1.5G", s)
	}
	mult, ok := sizeUnits[unit]
	if !ok {
		return 0, fmt.Errorf("invalid size %q: unknown unit %q (use K, M, G or T)", s, in[i:])
	}
	// Exact arithmetic: big.Rat avoids float rounding on large values.
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, fmt.Errorf("invalid size %q: not a number", s)
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	if !r.IsInt() {
		// Fractions of a byte round down, e.g. "1.5K" is 1536 but "0.3K" is 307.
		q := new(big.Int).Quo(r.Num(), r.Denom())
		r.SetInt(q)
	}
	v := r.Num()
	if !v.IsInt64() || v.Int64() > math.MaxInt64 {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	if v.Sign() <= 0 {
		return 0, fmt.Errorf("invalid size %q: must be greater than zero", s)
	}
	return v.Int64(), nil
}

// FormatSize renders n bytes with a binary unit, for humans.
func FormatSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 3; m /= unit {
		div *= unit
		exp++
	}
	v := float64(n) / float64(div)
	s := fmt.Sprintf("%.1f", v)
	s = strings.TrimSuffix(s, ".0")
	return s + string("KMGT"[exp])
}
