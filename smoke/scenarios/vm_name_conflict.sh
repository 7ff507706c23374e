# A name is taken once: a second create with it fails naming it, and of two
# racing creates of one new name exactly one wins.
CLASS=pure
COST=20

run() {
	local n m ip
	n=$(uniq_name dup)
	vm_create "$n" --image busybox --no-start
	ip=$(vm_ip "$n")
	step "second vm create --name $n"
	must_fail bg vm create --name "$n" --image busybox --no-start
	assert_contains "$OUT" "$n" "conflict error"
	assert_eq "$ip" "$(vm_ip "$n")" "first VM's IP after the failed create"
	assert_eq 1 "$(bg vm ls -a | grep -c "^$n ")" "VMs named $n"

	m=$(uniq_name race)
	track "$m"
	step "two racing creates of $m"
	bg vm create --name "$m" --image busybox >"$WORK/out/$m.1" 2>&1 &
	local p1=$!
	bg vm create --name "$m" --image busybox >"$WORK/out/$m.2" 2>&1 &
	local p2=$!
	local r1=0 r2=0
	wait $p1 || r1=$?
	wait $p2 || r2=$?
	step "exit statuses: $r1 $r2"
	if ((r1 == 0)); then ((r2 != 0)) || fail "both creates of $m succeeded"; else ((r2 == 0)) || fail "both creates of $m failed: $(cat "$WORK/out/$m.1" "$WORK/out/$m.2")"; fi
	assert_eq 1 "$(bg vm ls -a | grep -c "^$m ")" "VMs named $m"
	assert_eq running "$(vm_state "$m")" "winner's state"
	assert_eq "$m" "$(x "$m" hostname)" "winner's hostname"
}
