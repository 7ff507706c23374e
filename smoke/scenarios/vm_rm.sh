# vm rm: a running VM needs -f; removal takes its VMM, files and tap.
CLASS=pure
COST=12

run() {
	local n m pid dir
	n=$(uniq_name rm)
	vm_create "$n" --image busybox
	pid=$(vm_pid "$n")
	dir=$(vm_field "$n" dir)
	[[ -d $dir ]] || fail "VM dir $dir missing"
	step "vm rm without -f"
	must_fail bg vm rm "$n"
	assert_contains "$OUT" "$n" "error for removing a running VM"
	assert_eq running "$(vm_state "$n")" "state after a refused rm"
	step "vm rm -f"
	bg vm rm -f "$n"
	! vm_exists "$n" || fail "$n still listed"
	! kill -0 "$pid" 2>/dev/null || fail "VMM $pid alive after rm -f"
	[[ ! -e $dir ]] || fail "VM dir $dir left after rm"
	m=$(uniq_name rms)
	vm_create "$m" --image busybox --no-start
	step "vm rm of a stopped VM needs no -f"
	bg vm rm "$m"
	! vm_exists "$m" || fail "$m still listed"
	must_fail bg vm rm "no-such-vm-$m"
	assert_contains "$OUT" "no-such-vm-$m" "error for an unknown VM"
}
