# vm snapshot saves a running VM (it runs on); snapshot ls/inspect list it
# (-o json too); create --from starts a VM with the source's files and
# process under its own name and address; rm of the source keeps the
# snapshot, snapshot rm removes it, a second name is refused.
CLASS=pure
COST=60

run() {
	local n r s ip
	n=$(uniq_name sn)
	r=$(uniq_name snr)
	s=$(uniq_name snap)
	vm_create "$n" --image busybox --memory 256
	x "$n" sh -c 'echo kept > /root/f; sleep 1000 </dev/null >/dev/null 2>&1 & echo $! > /root/pid'
	step "vm snapshot $n --name $s"
	bg vm snapshot "$n" --name "$s"
	assert_eq running "$(vm_state "$n")" "source after the snapshot"
	assert_contains "$(bg snapshot ls)" "$s" "snapshot ls"
	assert_contains "$(bg snapshot ls -o json)" "\"name\": \"$s\"" "snapshot ls -o json"
	assert_contains "$(bg snapshot inspect "$s" -o json)" "\"source_vm\": \"$n\"" "snapshot inspect"
	must_fail bg vm snapshot "$n" --name "$s"
	assert_contains "$OUT" "already exists" "a second snapshot of the same name"
	track "$r"
	step "vm create --from $s --name $r"
	bg vm create --from "$s" --name "$r"
	assert_eq "kept
alive" "$(x "$r" sh -c 'cat /root/f; kill -0 $(cat /root/pid) && echo alive')" "files and process of the restored VM"
	assert_eq "$r" "$(x "$r" hostname)" "hostname of the restored VM"
	ip=$(vm_ip "$r")
	[[ $ip != "$(vm_ip "$n")" ]] || fail "restored VM has the source's IP $ip"
	assert_contains "$(x "$r" ip -o -4 addr show dev eth0)" "$ip/" "guest address of the restored VM"
	assert_eq snapshot "$(inspect_field "$r" start)" "vm inspect start"
	step "vm rm $n keeps $s"
	bg vm rm -f "$n"
	assert_contains "$(bg snapshot ls)" "$s" "snapshot after its source's removal"
	bg vm rm -f "$r"
	step "snapshot rm $s"
	bg snapshot rm "$s"
	assert_not_contains "$(bg snapshot ls)" "$s" "snapshot ls after rm"
}
