# stop powers the guest off (VMM gone), start boots it again, restart gives
# a fresh boot, stop -f kills at once; exec works whenever it runs.
CLASS=pure
COST=30

run() {
	local n pid boot1 boot2 boot3
	n=$(uniq_name ssr)
	vm_create "$n" --image busybox
	pid=$(vm_pid "$n")
	boot1=$(x "$n" cat /proc/sys/kernel/random/boot_id)
	step "vm stop $n"
	bg vm stop "$n"
	assert_eq stopped "$(vm_state "$n")" "state after stop"
	! kill -0 "$pid" 2>/dev/null || fail "VMM pid $pid alive after stop"
	must_fail bg vm exec "$n" -- true
	step "vm start $n"
	bg vm start "$n"
	assert_eq running "$(vm_state "$n")" "state after start"
	boot2=$(x "$n" cat /proc/sys/kernel/random/boot_id)
	[[ $boot2 != "$boot1" ]] || fail "same boot id after stop/start"
	step "vm restart $n"
	bg vm restart "$n"
	assert_eq running "$(vm_state "$n")" "state after restart"
	boot3=$(x "$n" cat /proc/sys/kernel/random/boot_id)
	[[ $boot3 != "$boot2" ]] || fail "same boot id after restart"
	pid=$(vm_pid "$n")
	step "vm stop -f $n"
	bg vm stop -f "$n"
	assert_eq stopped "$(vm_state "$n")" "state after stop -f"
	! kill -0 "$pid" 2>/dev/null || fail "VMM pid $pid alive after stop -f"
	step "vm start after stop -f"
	bg vm start "$n"
	assert_eq ok "$(x "$n" echo ok)" "exec after a forced stop"
}
