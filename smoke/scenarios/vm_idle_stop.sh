# --idle-stop: the VM runs on through an exec longer than its idle time,
# then stops once idle (with reason=idle in `banger events`), and starts
# again with the setting kept.
CLASS=pure
COST=90

is_stopped() { [[ $(vm_state "$1") == stopped ]]; }

run() {
	local n ev_pid ev_out
	n=$(uniq_name idl)
	must_fail bg vm create --name "$n-bad" --idle-stop soon
	vm_create "$n" --image busybox --idle-stop 20s
	assert_eq 20s "$(inspect_field "$n" idle_stop)" "inspect idle_stop"
	ev_out=$(mktemp)
	bg events -o json --filter name="$n" --filter action=stop >"$ev_out" &
	ev_pid=$!
	step "vm exec sleep 30 (longer than the idle time)"
	assert_eq done "$(x "$n" sh -c 'sleep 30; echo done')" "a 30 s exec ran to its end"
	assert_eq running "$(vm_state "$n")" "state right after the exec"
	step "wait for the idle stop"
	wait_for 90 is_stopped "$n"
	sleep 1
	kill "$ev_pid" 2>/dev/null || true
	assert_contains "$(cat "$ev_out")" '"reason":"idle"' "stop event reason"
	rm -f "$ev_out"
	step "vm start: runs again, setting kept"
	bg vm start "$n"
	assert_eq running "$(vm_state "$n")" "state after start"
	assert_eq 20s "$(inspect_field "$n" idle_stop)" "idle_stop after start"
}
