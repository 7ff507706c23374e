# vmdns: <name>.vm resolves to the guest from the daemon's namespace and from
# other guests; unknown names are NXDOMAIN; a stopped VM's record goes away.
CLASS=pure
COST=25

dig_a() { ip netns exec "$NS_D" dig +short +time=2 +tries=2 @172.30.0.1 "$1" A; }

run() {
	local a b ipa ipb
	a=$(uniq_name dnsa)
	b=$(uniq_name dnsb)
	vm_create "$a" --image busybox
	vm_create "$b" --image busybox
	ipa=$(vm_ip "$a")
	ipb=$(vm_ip "$b")
	assert_eq "$ipa" "$(dig_a "$a.vm")" "dig $a.vm"
	assert_eq "$ipb" "$(dig_a "$b.vm")" "dig $b.vm"
	assert_contains "$(ip netns exec "$NS_D" dig +time=2 +tries=2 @172.30.0.1 "nosuch-$a.vm" A)" "status: NXDOMAIN" "dig of an unknown .vm name"
	assert_contains "$(ip netns exec "$NS_D" dig +short +time=2 +tries=2 @172.30.0.1 -x "$ipa")" "$a.vm" "PTR of $ipa"
	step "$a resolves and pings $b by name"
	assert_contains "$(x "$a" nslookup "$b.vm")" "$ipb" "nslookup $b.vm in $a"
	x "$a" ping -c 1 -W 5 "$b.vm" || fail "$a cannot ping $b.vm"
	step "stop $b: its record goes"
	bg vm stop "$b"
	assert_contains "$(ip netns exec "$NS_D" dig +time=2 +tries=2 @172.30.0.1 "$b.vm" A)" "status: NXDOMAIN" "dig $b.vm after stop"
	assert_eq "$ipa" "$(dig_a "$a.vm")" "dig $a.vm after $b stopped"
}
