# vm exec runs over the agent channel: stdin, stdout, stderr and the exit
# status pass through, and it works with the guest's network down.
CLASS=pure
COST=12

run() {
	local n rc out
	n=$(uniq_name exec)
	vm_create "$n" --image busybox
	assert_eq "hello agent" "$(echo 'hello agent' | bg vm exec "$n" -- cat)" "stdin round trip"
	out=$(head -c 300000 /dev/urandom | base64 -w0 | tee "$WORK/out/$n.in" | bg vm exec "$n" -- md5sum | cut -d' ' -f1)
	assert_eq "$(md5sum <"$WORK/out/$n.in" | cut -d' ' -f1)" "$out" "md5 of 400 KB through stdin"
	set +e
	bg vm exec "$n" -- sh -c 'echo o; echo e >&2; exit 3' >"$WORK/out/$n.o" 2>"$WORK/out/$n.e"
	rc=$?
	set -e
	assert_eq 3 "$rc" "exec exit status"
	assert_eq o "$(cat "$WORK/out/$n.o")" "exec stdout"
	assert_eq e "$(cat "$WORK/out/$n.e")" "exec stderr"
	step "guest network down; exec still works"
	x "$n" ip link set eth0 down
	assert_eq still "$(x "$n" echo still)" "exec with eth0 down"
	must_fail bg vm exec "$n" -- /no/such/binary
	must_fail bg vm exec no-such-vm-xyz -- true
	assert_contains "$OUT" no-such-vm-xyz "error for an unknown VM"
}
