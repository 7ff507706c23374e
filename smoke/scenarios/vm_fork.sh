# vm fork gives a second VM with the source's processes and files (a tmpfs
# too) and its own hostname, address, MAC, machine id; both answer and
# resolve each other by name; the source's disk is untouched by the fork.
CLASS=pure
COST=60

run() {
	local n f a b
	n=$(uniq_name fks)
	f=$(uniq_name fkf)
	vm_create "$n" --image busybox --memory 256
	x "$n" sh -c 'echo before > /root/f; mkdir -p /mnt/t; mount -t tmpfs tmpfs /mnt/t; echo inram > /mnt/t/x; sleep 1000 </dev/null >/dev/null 2>&1 & echo $! > /root/pid'
	track "$f"
	step "vm fork $n --name $f"
	bg vm fork "$n" --name "$f"
	for v in "$n" "$f"; do
		assert_eq "before
inram
alive" "$(x "$v" sh -c 'cat /root/f /mnt/t/x; kill -0 $(cat /root/pid) && echo alive')" "files and process in $v"
	done
	a=$(x "$n" sh -c 'hostname; cat /etc/machine-id; cat /sys/class/net/eth0/address; ip -o -4 addr show dev eth0 | awk "{print \$4}"')
	b=$(x "$f" sh -c 'hostname; cat /etc/machine-id; cat /sys/class/net/eth0/address; ip -o -4 addr show dev eth0 | awk "{print \$4}"')
	paste <(echo "$a") <(echo "$b") | while read -r l r; do
		[[ $l != "$r" ]] || fail "source and fork share $l"
	done
	assert_eq "$f" "$(echo "$b" | head -1)" "fork hostname"
	x "$f" ping -c 1 -W 5 "$n.vm" >/dev/null || fail "$f cannot ping $n.vm"
	x "$n" ping -c 1 -W 5 "$f.vm" >/dev/null || fail "$n cannot ping $f.vm"
	x "$f" sh -c 'echo fork > /root/f; sync'
	assert_eq before "$(x "$n" cat /root/f)" "source's disk after a write in the fork"
}
