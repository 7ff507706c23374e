package model

import (
	"crypto/rand"
	"math/big"
)

var nameAdjectives = []string{"brisk", "calm", "eager", "fuzzy", "gentle", "happy", "jolly", "keen", "lucid", "merry",
	"nimble", "proud", "quiet", "rapid", "sunny", "tidy", "vivid", "witty", "zesty", "bold", "crisp", "deft", "fair", "grand"}
var nameNouns = []string{"otter", "falcon", "badger", "heron", "lynx", "marten", "newt", "orca", "panda", "quokka",
	"raven", "stoat", "tapir", "walrus", "yak", "zebra", "bison", "crane", "dingo", "egret", "ferret", "gecko", "ibis", "koala"}

func pick(list []string) string {
	n, _ := rand.Int(rand.Reader, big.NewInt(int64(len(list))))
	return list[n.Int64()]
}

// GenerateVMName returns a DNS-label-safe name like "brisk-otter-4821".
// The daemon names a VM created without one; `vm run` picks the name
// itself so that it can tell the user which VM an interrupted run left.
func GenerateVMName() string {
	n, _ := rand.Int(rand.Reader, big.NewInt(10000))
	return pick(nameAdjectives) + "-" + pick(nameNouns) + "-" + leftPad(n.String())
}

func leftPad(s string) string {
	for len(s) < 4 {
		s = "0" + s
	}
	return s
}
