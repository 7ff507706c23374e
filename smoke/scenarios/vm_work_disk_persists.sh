# The work disk (/root) and the system overlay (/etc) survive stop/start.
CLASS=pure
COST=20

run() {
	local n
	n=$(uniq_name persist)
	vm_create "$n" --image busybox
	x "$n" sh -c 'echo work-data >/root/f && echo sys-data >/etc/x && mkdir -p /root/d && dd if=/dev/urandom of=/root/d/blob bs=1k count=512 2>/dev/null && md5sum /root/d/blob >/root/d/sum'
	step "vm stop / start"
	bg vm stop "$n"
	bg vm start "$n"
	assert_eq work-data "$(x "$n" cat /root/f)" "/root/f after restart"
	assert_eq sys-data "$(x "$n" cat /etc/x)" "/etc/x after restart"
	x "$n" sh -c 'cd / && md5sum -c /root/d/sum' || fail "work disk blob checksum changed"
	step "vm stop -f / start (unclean)"
	x "$n" sh -c 'echo second >/root/g && sync'
	bg vm stop -f "$n"
	bg vm start "$n"
	assert_eq second "$(x "$n" cat /root/g)" "/root/g after a forced stop (synced)"
}
