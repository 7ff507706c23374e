// Package nftx holds the nftables expression helpers and the probe that
// banger's two tables (nat's inet table, antispoof's bridge table) share.
package nftx

import (
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Cat joins rule fragments into one rule's expressions.
func Cat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// Policy is a chain policy's address, as nftables.Chain wants it.
func Policy(p nftables.ChainPolicy) *nftables.ChainPolicy { return &p }

// Eq compares register 1 with b.
func Eq(b []byte) []expr.Any {
	return []expr.Any{&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b}}
}

// IfName is the zero-padded IFNAMSIZ form nft compares interface names in.
func IfName(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}

// Probe lists the kernel's tables of family over netlink without changing
// anything: it fails where nf_tables is missing or the caller lacks
// CAP_NET_ADMIN.
func Probe(family nftables.TableFamily) error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	defer c.CloseLasting()
	_, err = c.ListTablesOfFamily(family)
	return err
}
