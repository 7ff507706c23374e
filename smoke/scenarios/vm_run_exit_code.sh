# vm run -- CMD exits with CMD's status and keeps stdout and stderr apart.
CLASS=pure
COST=12

run() {
	local n rc
	n=$(uniq_name rc)
	track "$n"
	step "vm run --rm -- sh -c 'echo out; echo err >&2; exit 7'"
	set +e
	bg vm run --rm --name "$n" --image busybox -- sh -c 'echo out; echo err >&2; exit 7' >"$WORK/out/$n.stdout" 2>"$WORK/out/$n.stderr"
	rc=$?
	set -e
	assert_eq 7 "$rc" "exit status of vm run"
	assert_eq out "$(cat "$WORK/out/$n.stdout")" "stdout"
	assert_contains "$(cat "$WORK/out/$n.stderr")" err "stderr"
	! vm_exists "$n" || fail "VM $n still exists after vm run --rm"
}
