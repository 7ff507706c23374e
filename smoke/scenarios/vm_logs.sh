# vm logs prints the console; -f follows it as it grows.
CLASS=pure
COST=12

run() {
	local n f
	n=$(uniq_name logs)
	vm_create "$n" --image busybox
	assert_contains "$(bg vm logs "$n")" "banger-init" "console log"
	assert_contains "$(bg vm logs "$n")" "banger-init: ready" "console log"
	f=$WORK/out/$n.follow
	bg vm logs -f "$n" >"$f" 2>&1 &
	local fp=$!
	sleep 1
	x "$n" sh -c "echo marker-$n >/dev/console"
	local i
	for i in $(seq 1 40); do grep -q "marker-$n" "$f" && break; sleep 0.5; done
	kill "$fp" 2>/dev/null || true
	wait "$fp" 2>/dev/null || true
	grep -q "marker-$n" "$f" || fail "vm logs -f did not show marker-$n; it shows: $(tail -5 "$f")"
	step "logs of a stopped VM"
	bg vm stop "$n"
	assert_contains "$(bg vm logs "$n")" "marker-$n" "console log after stop"
}
