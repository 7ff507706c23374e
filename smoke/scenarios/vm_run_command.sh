# vm run --rm -- CMD prints the command's output (the guest kernel's release)
# and exits 0; the VM is gone afterwards.
CLASS=pure
COST=15

run() {
	local n rel out
	n=$(uniq_name run)
	track "$n"
	rel=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["release"])' "$STATE/kernels/$SMOKE_KERNEL_NAME/manifest.json")
	step "vm run --rm --image busybox -- uname -r (want $rel)"
	out=$(bg vm run --rm --name "$n" --image busybox -- uname -r)
	assert_eq "$rel" "$out" "uname -r in the guest"
	if [[ ${SMOKE_BREAK:-} == 1 ]]; then
		assert_eq "broken-on-purpose" "$out" "SMOKE_BREAK"
	fi
	capture bg vm inspect "$n"
	((RC != 0)) || fail "VM $n still exists after vm run --rm: $OUT"
	assert_contains "$OUT" "$n" "inspect error"
}
