# vm create --no-start reserves the VM (name, IP) without booting it; vm
# start boots it later.
CLASS=pure
COST=10

run() {
	local n st
	n=$(uniq_name nostart)
	vm_create "$n" --image busybox --no-start
	st=$(vm_state "$n")
	[[ $st != running ]] || fail "--no-start VM is running"
	assert_eq "" "$(vm_pid "$n" | sed 's/^0$//')" "VMM pid of a --no-start VM"
	assert_not_contains "$(bg vm ls)" "$n" "vm ls (running only)"
	assert_contains "$(bg vm ls -a)" "$n" "vm ls -a"
	[[ -n $(vm_ip "$n") ]] || fail "no guest IP reserved"
	step "vm start $n"
	bg vm start "$n"
	assert_eq running "$(vm_state "$n")" "state after start"
	assert_eq ok "$(x "$n" echo ok)" "exec after start"
}
