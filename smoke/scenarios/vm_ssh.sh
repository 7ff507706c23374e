# vm ssh runs the system ssh through the daemon socket; plain ssh to the
# guest's address on port 22 (from the daemon's namespace) works with the
# daemon's key.
CLASS=pure
COST=12

run() {
	local n rc ip
	n=$(uniq_name ssh)
	vm_create "$n" --image busybox
	assert_eq "$n" "$(bg vm ssh "$n" -- hostname </dev/null)" "hostname over vm ssh"
	set +e
	bg vm ssh "$n" -- exit 5 </dev/null
	rc=$?
	set -e
	assert_eq 5 "$rc" "exit status over vm ssh"
	assert_eq piped "$(echo piped | bg vm ssh "$n" -- cat)" "stdin over vm ssh"
	ip=$(vm_ip "$n")
	step "ssh root@$ip from $NS_D"
	assert_eq "$n" "$(ip netns exec "$NS_D" ssh -i "$STATE/ssh/id_ed25519" -o BatchMode=yes -o StrictHostKeyChecking=no \
		-o UserKnownHostsFile=/dev/null -o ConnectTimeout=10 -o LogLevel=ERROR "root@$ip" hostname </dev/null)" "hostname over TCP ssh"
	step "a key the guest does not know is refused"
	ssh-keygen -q -t ed25519 -N '' -f "$WORK/out/$n.key"
	must_fail ip netns exec "$NS_D" ssh -i "$WORK/out/$n.key" -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no \
		-o UserKnownHostsFile=/dev/null -o ConnectTimeout=10 "root@$ip" true
	assert_contains "$OUT" "ermission denied" "ssh with a foreign key"
}
