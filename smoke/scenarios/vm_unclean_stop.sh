# A VM whose VMM is killed soon after its first boot (vm stop -f, a host
# crash) starts again and answers exec. The guest's identity (its SSH host
# key, pinned by the daemon on first contact) must survive an unclean stop.
CLASS=pure
COST=15

run() {
	local n
	n=$(uniq_name unclean)
	vm_create "$n" --image busybox
	step "vm stop -f right after the first boot"
	bg vm stop -f "$n"
	assert_eq stopped "$(vm_state "$n")" "state after stop -f"
	step "vm start"
	bg vm start "$n"
	assert_eq ok "$(x "$n" echo ok)" "exec after an unclean stop"
}
