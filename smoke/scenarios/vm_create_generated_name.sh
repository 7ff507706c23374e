# vm create without --name generates a DNS-label-safe name, prints it, and
# the guest's hostname is that name.
CLASS=pure
COST=10

run() {
	local n
	step "vm create --image busybox (no name)"
	n=$(bg vm create --image busybox | tail -1)
	track "$n"
	assert_match "$n" '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$' "generated name"
	assert_eq running "$(vm_state "$n")" "state of $n"
	assert_eq "$n" "$(x "$n" hostname)" "guest hostname"
}
