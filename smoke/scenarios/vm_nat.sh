# --nat: that guest reaches the uplink's HTTP server through the daemon's
# namespace; a guest without --nat does not; stopping the NAT VM removes its
# address from the nftables ruleset.
CLASS=pure
COST=25

run() {
	local a b ipa
	a=$(uniq_name nat)
	b=$(uniq_name nonat)
	vm_create "$a" --image busybox --nat
	vm_create "$b" --image busybox
	ipa=$(vm_ip "$a")
	assert_contains "$(ip netns exec "$NS_D" nft list ruleset)" "$ipa" "nft ruleset with $a running"
	step "$a fetches http://192.0.2.1/"
	assert_eq "$UPLINK_TOKEN" "$(guest_http "$a" 192.0.2.1)" "page fetched through NAT"
	step "$b (no --nat) cannot"
	must_fail guest_http "$b" 192.0.2.1
	step "both reach the bridge address"
	if ! x "$b" ping -c 3 -W 5 172.30.0.1; then
		x "$b" sh -c 'ip neigh; ip route; ip -s link show eth0' || true
		ip netns exec "$NS_D" sh -c 'ip neigh; bridge link; ip -s link show banger0' || true
		fail "$b cannot ping the bridge"
	fi
	step "stop $a: no nft element for $ipa"
	bg vm stop "$a"
	assert_not_contains "$(ip netns exec "$NS_D" nft list ruleset)" "$ipa" "nft ruleset after stopping $a"
	step "start $a again: NAT is back"
	bg vm start "$a"
	assert_eq "$UPLINK_TOKEN" "$(guest_http "$a" 192.0.2.1)" "page fetched after restart"
}
