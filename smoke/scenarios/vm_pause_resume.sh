# pause stops the guest (a counter stands still, exec is refused naming
# `vm resume`, vm ls says paused); resume runs it on and exec answers.
CLASS=pure
COST=40

run() {
	local n a b c d
	n=$(uniq_name pz)
	vm_create "$n" --image busybox --memory 256
	x "$n" sh -c '(i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.2; done) </dev/null >/dev/null 2>&1 &'
	sleep 1
	step "vm pause $n"
	bg vm pause "$n"
	assert_eq paused "$(vm_state "$n")" "state after pause"
	must_fail bg vm exec "$n" -- true
	assert_contains "$OUT" "vm resume $n" "exec in a paused VM"
	sleep 3
	step "vm resume $n"
	bg vm resume "$n"
	assert_eq running "$(vm_state "$n")" "state after resume"
	a=$(x "$n" cat /tmp/count)
	sleep 1
	b=$(x "$n" cat /tmp/count)
	((a <= 12)) || fail "the counter ran while paused: $a ticks (≈5 before the pause)"
	((b > a)) || fail "the counter stands still after resume: $a then $b"
	c=$(x "$n" date +%s)
	d=$(date +%s)
	((c - d <= 3 && d - c <= 3)) || fail "guest clock $c, host $d after resume"
}
