# vm create --name: the VM is running under that name, the guest's hostname
# is the name, and vm ls shows it with its DNS name.
CLASS=pure
COST=10

run() {
	local n
	n=$(uniq_name named)
	vm_create "$n" --image busybox
	assert_eq running "$(vm_state "$n")" "state"
	assert_eq "$n" "$(x "$n" hostname)" "guest hostname"
	assert_eq "$n.vm" "$(vm_field "$n" dns_name)" "DNS name"
	assert_contains "$(bg vm ls)" "$n" "vm ls"
	assert_contains "$(bg vm inspect "$n")" "Name:            $n" "vm inspect"
}
