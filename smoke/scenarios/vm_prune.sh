# vm prune -f removes every stopped VM and leaves running ones. Global: it
# would remove other scenarios' stopped VMs.
CLASS=global
COST=25

run() {
	local r s c
	r=$(uniq_name prr)
	s=$(uniq_name prs)
	c=$(uniq_name prc)
	vm_create "$r" --image busybox
	vm_create "$s" --image busybox
	vm_create "$c" --image busybox --no-start
	bg vm stop "$s"
	step "vm prune without -f and no terminal does not remove anything"
	capture bg vm prune </dev/null
	vm_exists "$s" || fail "vm prune without -f removed $s"
	step "vm prune -f"
	bg vm prune -f
	! vm_exists "$s" || fail "stopped VM $s survived prune"
	! vm_exists "$c" || fail "never-started VM $c survived prune"
	assert_eq running "$(vm_state "$r")" "running VM after prune"
	assert_eq ok "$(x "$r" echo ok)" "exec in the running VM after prune"
}
