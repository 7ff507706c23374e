// Package shellquote joins an argv into one /bin/sh command line: the
// agent runs commands through the guest's shell (vm exec, vm run, the
// SDK's Exec).
package shellquote

import "strings"

// Join makes argv one /bin/sh command line, quoting each word that has
// anything but letters, digits and -_./=:,@%+. A single word is taken as
// a command line as it is (`vm exec NAME -- 'ls | wc -l'`).
func Join(argv []string) string {
	if len(argv) == 1 {
		return argv[0]
	}
	q := make([]string, len(argv))
	for i, a := range argv {
		safe := a != ""
		for _, r := range a {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,@%+", r)) {
				safe = false
				break
			}
		}
		if safe {
			q[i] = a
		} else {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(q, " ")
}
