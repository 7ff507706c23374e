# A kernel without its modules cannot see the guest's disks: the create
# fails within the readiness timeout (smoke config: 90s) with console lines in
# the error, the VM is left in error with its console for vm logs.
CLASS=pure
COST=40

run() {
	local k n t0 dt
	k=$(uniq_name nomod)
	n=$(uniq_name bootfail)
	step "kernel import $k (vmlinuz only, no modules)"
	bg kernel import --name "$k" --kernel "$STATE/kernels/debian-cloud-amd64/vmlinuz"
	FAIL_HOOK="bg vm rm -f $n; bg kernel rm $k"
	track "$n"
	t0=$(date +%s)
	must_fail bg vm create --name "$n" --image busybox --kernel "$k"
	dt=$(($(date +%s) - t0))
	step "failed after ${dt}s"
	((dt < 150)) || fail "boot failure took ${dt}s (readiness timeout is 90s)"
	assert_contains "$OUT" "console" "boot failure error"
	assert_contains "$OUT" "banger-init" "console tail in the error"
	assert_eq error "$(vm_state "$n")" "state of the failed VM"
	assert_contains "$(bg vm logs "$n")" "banger-init: boot failed" "vm logs of the failed VM"
	bg vm rm -f "$n"
	bg kernel rm "$k"
}
