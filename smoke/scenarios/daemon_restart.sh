# SIGKILL the daemon while VMs run, start it again in the same namespace:
# running VMs are re-adopted (exec works, NAT and DNS still there), a VM whose
# VMM died meanwhile is marked stopped, and new VMs can be made; the
# re-adopted VM's clock, set to 2001 just before the kill, is the host's
# again (the new daemon re-sets it on adoption). (Starting the dead VM
# again is vm_unclean_stop's subject.)
CLASS=global
COST=40

run() {
	local a b dpid pa pb ipa before g after
	a=$(uniq_name dra)
	b=$(uniq_name drb)
	vm_create "$a" --image busybox --nat
	vm_create "$b" --image busybox
	pa=$(vm_pid "$a")
	pb=$(vm_pid "$b")
	ipa=$(vm_ip "$a")
	dpid=$(bg version | sed -n 's/.*daemon .*(pid \([0-9]*\).*/\1/p')
	[[ -n $dpid ]] || fail "no daemon pid in banger version"
	# The daemon re-sets a guest's clock every minute: should that land
	# between the date -s and the check, set it again (the next is a
	# minute away, long after the kill below).
	for i in 1 2 3; do
		x "$a" date -s @1000000000 >/dev/null
		g=$(x "$a" date +%s)
		((g < 1100000000)) && break
		step "the daemon's resync put $a's clock right before the check: again"
	done
	((g < 1100000000)) || fail "date -s did not set $a's clock back: $g"
	step "SIGKILL daemon $dpid; then kill $b's VMM ($pb)"
	kill -KILL "$dpid"
	for i in $(seq 1 20); do kill -0 "$dpid" 2>/dev/null || break; sleep 0.25; done
	kill -0 "$pa" || fail "VMM of $a died with the daemon"
	kill -KILL "$pb"
	step "restart the daemon"
	start_daemon || fail "daemon did not come back; log: $(tail -20 "$WORK/daemon.log")"
	assert_eq running "$(vm_state "$a")" "state of $a after restart"
	assert_eq "$pa" "$(vm_pid "$a")" "VMM pid of $a (re-adopted)"
	assert_eq ok "$(x "$a" echo ok)" "exec in $a after restart"
	step "$a's clock after the re-adoption"
	local off=x t
	for t in $(seq 1 30); do
		before=$(date +%s) g=$(x "$a" date +%s) after=$(date +%s)
		((g >= before - 2 && g <= after + 2)) && { off=ok; break; }
		sleep 2
	done
	assert_eq ok "$off" "$a's clock within 2 s of the host's after the re-adoption (guest $(x "$a" date -u), host $(date -u))"
	assert_eq stopped "$(vm_state "$b")" "state of $b (VMM killed while the daemon was down)"
	assert_eq "$UPLINK_TOKEN" "$(guest_http "$a" 192.0.2.1)" "NAT of $a after restart"
	assert_eq "$ipa" "$(ip netns exec "$NS_D" dig +short +time=2 +tries=2 @172.30.0.1 "$a.vm" A)" "DNS of $a after restart"
	step "a new VM after the restart"
	local c
	c=$(uniq_name drc)
	vm_create "$c" --image busybox
	assert_eq ok "$(x "$c" echo ok)" "exec in $c"
	bg vm rm "$b"
	! vm_exists "$b" || fail "$b still listed after rm"
	bg vm stop "$a"
	assert_not_contains "$(ip netns exec "$NS_D" nft list ruleset)" "$ipa" "nft ruleset after stopping $a"
}
