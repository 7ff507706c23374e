# vm stats: CPU, memory, disk and network of a running VM, as JSON and a
# table; the guest's rx counter grows with an HTTP fetch.
CLASS=pure
COST=30

run() {
	local n js rx1 rx2
	n=$(uniq_name sts)
	vm_create "$n" --image busybox --nat
	js=$(bg vm stats "$n" --no-stream -o json)
	field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[0][sys.argv[2]])' "$js" "$1"; }
	assert_eq "$n" "$(field name)" "stats name"
	(( $(field mem_rss_bytes) > 1048576 )) || fail "mem_rss_bytes $(field mem_rss_bytes)"
	(( $(field mem_limit_bytes) == 512 * 1048576 )) || fail "mem_limit_bytes $(field mem_limit_bytes)"
	(( $(field disk_work_bytes) > 0 )) || fail "disk_work_bytes $(field disk_work_bytes)"
	python3 -c 'import sys; assert float(sys.argv[1]) > 0' "$(field cpu_seconds)" || fail "cpu_seconds $(field cpu_seconds)"
	rx1=$(field net_rx_bytes)
	step "traffic: an HTTP fetch from the uplink through NAT"
	assert_eq "$UPLINK_TOKEN" "$(guest_http "$n" 192.0.2.1)" "page fetched"
	js=$(bg vm stats "$n" --no-stream -o json)
	rx2=$(field net_rx_bytes)
	(( rx2 > rx1 )) || fail "net_rx_bytes $rx1 -> $rx2 after an HTTP fetch"
	capture bg vm stats --no-stream
	assert_eq 0 "$RC" "vm stats exit"
	assert_contains "$OUT" "$n" "table lists the VM"
	assert_contains "$OUT" "CPU %" "table header"
}
