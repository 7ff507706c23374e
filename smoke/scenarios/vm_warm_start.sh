# --warm: the first create of a shape boots cold and leaves its boot
# snapshot, the second restores it (vm inspect: warm) with its own name,
# address, machine id and env, and answers exec; another memory size and
# --cold boot cold.
CLASS=pure
COST=60

run() {
	local a b c ia ib
	a=$(uniq_name wsa)
	b=$(uniq_name wsb)
	c=$(uniq_name wsc)
	vm_create "$a" --warm --image busybox --memory 224
	assert_eq cold "$(inspect_field "$a" start)" "first create of the shape"
	vm_create "$b" --warm --image busybox --memory 224 -e WSVAR=b
	assert_eq warm "$(inspect_field "$b" start)" "second create of the shape"
	assert_eq "$b b" "$(x "$b" sh -c 'echo $(hostname) $WSVAR')" "hostname and env of the warm VM"
	ia=$(x "$a" sh -c 'cat /etc/machine-id; cat /sys/class/net/eth0/address; ip -o -4 addr show dev eth0 | awk "{print \$4}"')
	ib=$(x "$b" sh -c 'cat /etc/machine-id; cat /sys/class/net/eth0/address; ip -o -4 addr show dev eth0 | awk "{print \$4}"')
	paste <(echo "$ia") <(echo "$ib") | while read -r l r; do
		[[ $l != "$r" ]] || fail "cold and warm VM share $l"
	done
	assert_contains "$ib" "$(vm_ip "$b")/" "warm VM's guest address"
	x "$b" ping -c 1 -W 5 "$a.vm" >/dev/null || fail "$b cannot ping $a.vm"
	assert_contains "$(bg doctor)" "boot snapshot" "doctor on warm start"
	bg vm rm -f "$b"
	vm_create "$c" --warm --image busybox --memory 240
	assert_eq cold "$(inspect_field "$c" start)" "another memory size"
	bg vm rm -f "$c"
	vm_create "$c" --cold --image busybox --memory 224
	assert_eq cold "$(inspect_field "$c" start)" "--cold"
}
