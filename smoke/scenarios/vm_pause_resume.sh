# pause stops the guest (a ticker writing the guest's clock every 0.2 s
# shows a gap as long as the pause; exec is refused naming `vm resume`; vm
# ls says paused); resume runs it on (the ticker goes on, exec answers, the
# clock is the host's).
CLASS=pure
COST=40

run() {
	local n gap a b c d
	n=$(uniq_name pz)
	vm_create "$n" --image busybox --memory 256
	x "$n" sh -c '(while true; do date +%s >> /tmp/ticks; sleep 0.2; done) </dev/null >/dev/null 2>&1 &'
	sleep 1
	step "vm pause $n"
	bg vm pause "$n"
	assert_eq paused "$(vm_state "$n")" "state after pause"
	must_fail bg vm exec "$n" -- true
	assert_contains "$OUT" "vm resume $n" "exec in a paused VM"
	sleep 5
	step "vm resume $n"
	bg vm resume "$n"
	assert_eq running "$(vm_state "$n")" "state after resume"
	a=$(x "$n" sh -c 'wc -l < /tmp/ticks')
	sleep 1
	b=$(x "$n" sh -c 'wc -l < /tmp/ticks')
	((b > a)) || fail "the ticker stands still after resume: $a then $b lines"
	# The guest clock is stepped to the host's on resume: the pause is a
	# gap of about 5 s between two ticks (a guest that ran on would have
	# ticked through it).
	gap=$(x "$n" awk 'NR > 1 && $1 - p > m {m = $1 - p} {p = $1} END {print m + 0}' /tmp/ticks)
	((gap >= 4)) || fail "no gap of the pause's length between ticks (largest $gap s): the guest ran while paused"
	c=$(x "$n" date +%s)
	d=$(date +%s)
	((c - d <= 3 && d - c <= 3)) || fail "guest clock $c, host $d after resume"
}
