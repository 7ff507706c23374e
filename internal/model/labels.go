package model

import (
	"fmt"
	"regexp"
	"strings"
)

// Label limits: keys like Docker's and Kubernetes' (letters, digits, and
// ._/- inside), short printable values, a few dozen per VM.
const (
	MaxLabels        = 32
	MaxLabelValueLen = 255
)

var labelKeyRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$`)

// ValidateLabels checks a VM's labels, naming the first bad one.
func ValidateLabels(labels map[string]string) error {
	if len(labels) > MaxLabels {
		return fmt.Errorf("%d labels: at most %d", len(labels), MaxLabels)
	}
	for k, v := range labels {
		if !labelKeyRE.MatchString(k) {
			return fmt.Errorf("label key %q: want 1-63 letters, digits and ._/- (starting and ending with a letter or digit)", k)
		}
		if len(v) > MaxLabelValueLen {
			return fmt.Errorf("label %s: value of %d bytes, at most %d", k, len(v), MaxLabelValueLen)
		}
		for _, r := range v {
			if r < ' ' || r == 0x7f {
				return fmt.Errorf("label %s: value %q has a control character", k, v)
			}
		}
	}
	return nil
}

// ParseLabel splits KEY=VALUE (a bare KEY has the value "").
func ParseLabel(s string) (string, string) {
	k, v, _ := strings.Cut(s, "=")
	return k, v
}
