package vmdns

import (
	"fmt"
	"net"
	"os/exec"
	"strings"
)

// SetupResolved points systemd-resolved at the DNS server for `.vm` names
// only, on the bridge link:
//
//	resolvectl dns <bridge> <ip>
//	resolvectl domain <bridge> ~vm
//
// The `~vm` routing domain sends only `.vm` queries (and nothing else) to
// banger, so the host's other lookups are untouched. resolved forgets
// per-link settings when the link goes away, so the daemon re-runs this
// after it (re)creates the bridge.
func SetupResolved(bridge, ip string) error {
	cmds, err := setupResolvedCmds(bridge, ip)
	if err != nil {
		return err
	}
	return runResolvectl(cmds)
}

// TeardownResolved drops banger's per-link resolved settings
// (`resolvectl revert <bridge>`).
func TeardownResolved(bridge string) error {
	cmds, err := teardownResolvedCmds(bridge)
	if err != nil {
		return err
	}
	return runResolvectl(cmds)
}

func setupResolvedCmds(bridge, ip string) ([][]string, error) {
	if err := checkLink(bridge); err != nil {
		return nil, err
	}
	if net.ParseIP(ip) == nil {
		return nil, fmt.Errorf("vmdns: DNS server address %q is not an IP address", ip)
	}
	return [][]string{
		{"resolvectl", "dns", bridge, ip},
		{"resolvectl", "domain", bridge, "~" + strings.TrimSuffix(Domain, ".")},
	}, nil
}

func teardownResolvedCmds(bridge string) ([][]string, error) {
	if err := checkLink(bridge); err != nil {
		return nil, err
	}
	return [][]string{{"resolvectl", "revert", bridge}}, nil
}

// checkLink rejects names that cannot be a Linux interface, so they never
// reach a command line.
func checkLink(name string) error {
	if name == "" || len(name) > 15 || strings.ContainsAny(name, "/ \t\n:") || strings.HasPrefix(name, "-") {
		return fmt.Errorf("vmdns: %q is not a valid interface name", name)
	}
	return nil
}

func runResolvectl(cmds [][]string) error {
	bin, err := exec.LookPath("resolvectl")
	if err != nil {
		return fmt.Errorf("vmdns: resolvectl not found: this host does not use systemd-resolved; point your resolver at the bridge address for the %q domain by hand", strings.TrimSuffix(Domain, "."))
	}
	for _, c := range cmds {
		out, err := exec.Command(bin, c[1:]...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("vmdns: %s: %v: %s (is systemd-resolved running? `systemctl status systemd-resolved`)", strings.Join(c, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}
