# Two VMs of one image share its read-only rootfs but not their changes: a
# file written to / or /root in one is absent in the other.
CLASS=pure
COST=20

run() {
	local a b
	a=$(uniq_name ova)
	b=$(uniq_name ovb)
	vm_create "$a" --image busybox
	x "$a" sh -c 'echo from-a >/etc/x && echo from-a >/root/f && rm /bin/vi'
	vm_create "$b" --image busybox
	assert_eq no "$(x "$b" sh -c 'test -e /etc/x && echo yes || echo no')" "/etc/x in the second VM"
	assert_eq no "$(x "$b" sh -c 'test -e /root/f && echo yes || echo no')" "/root/f in the second VM"
	assert_eq yes "$(x "$b" sh -c 'test -e /bin/vi && echo yes || echo no')" "/bin/vi (removed in the first VM) in the second"
	assert_eq no "$(x "$a" sh -c 'test -e /bin/vi && echo yes || echo no')" "/bin/vi in the first VM"
	x "$b" sh -c 'touch /x-b' || fail "the second VM cannot write /"
	assert_eq no "$(x "$a" sh -c 'test -e /x-b && echo yes || echo no')" "/x-b in the first VM"
	x "$a" sh -c 'grep " / " /proc/mounts' | grep -q overlay || fail "/ is not an overlay in the guest"
}
