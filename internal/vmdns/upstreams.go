package vmdns

import (
	"bufio"
	"net"
	"os"
	"strings"
)

// Host resolver configuration files, in the order HostUpstreams reads them.
const (
	resolvConf        = "/etc/resolv.conf"
	resolvedUpstreams = "/run/systemd/resolve/resolv.conf"
)

// resolvedStub is systemd-resolved's stub listener. Forwarding to it would
// send `.vm`-routed lookups back to us once `banger dns setup` has run, and
// it is unreachable from inside a network namespace anyway.
const resolvedStub = "127.0.0.53"

// HostUpstreams returns the host's resolvers as "ip:53" addresses: the
// nameservers of /etc/resolv.conf minus systemd-resolved's stub; if that
// leaves none, those of /run/systemd/resolve/resolv.conf (the real
// upstreams resolved uses). Empty when neither names one: the server then
// answers SERVFAIL for non-`.vm` names.
func HostUpstreams() []string {
	return upstreamsFrom(resolvConf, resolvedUpstreams)
}

func upstreamsFrom(paths ...string) []string {
	for _, p := range paths {
		if ups := readNameservers(p); len(ups) > 0 {
			return ups
		}
	}
	return nil
}

func readNameservers(path string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || fields[0] != "nameserver" {
			continue
		}
		host := fields[1]
		ip := net.ParseIP(strings.SplitN(host, "%", 2)[0])
		if ip == nil || ip.String() == resolvedStub || ip.String() == "127.0.0.54" {
			continue
		}
		out = append(out, net.JoinHostPort(host, "53"))
	}
	return out
}
