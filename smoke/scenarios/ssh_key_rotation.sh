# ssh-key rotate while creates run: every VM ends up with exactly one
# authorized daemon key (old or new, never a torn seed), VMs created after the
# rotation hold the new key, and exec works in all of them.
CLASS=global
COST=45

# The daemon's keys in a VM: the CLI's own key (authorized on first use,
# a user key that rotation keeps) is left out.
akeys() {
	local k ukey=${XDG_CONFIG_HOME:-$HOME/.config}/banger/id_ed25519.pub
	k=$(x "$1" cat /root/.ssh/authorized_keys)
	if [[ -f $ukey ]]; then
		grep -v -F "$(cut -d' ' -f1,2 "$ukey")" <<<"$k" || true
	else
		printf '%s\n' "$k"
	fi
}

run() {
	local old new a c i pids=() names=() k
	old=$(cut -d' ' -f1,2 "$STATE/ssh/id_ed25519.pub")
	a=$(uniq_name rota)
	vm_create "$a" --image busybox
	assert_eq "$old" "$(akeys "$a" | cut -d' ' -f1,2)" "key of a VM made before the rotation"
	for i in 1 2; do
		names+=("$(uniq_name rotp$i)")
		track "${names[-1]}"
		bg vm create --name "${names[-1]}" --image busybox >"$WORK/out/${names[-1]}.create" 2>&1 &
		pids+=($!)
	done
	sleep 0.5
	step "ssh-key rotate while 2 creates run"
	bg ssh-key rotate
	new=$(cut -d' ' -f1,2 "$STATE/ssh/id_ed25519.pub")
	[[ $new != "$old" ]] || fail "the key did not change"
	for i in 0 1; do
		wait "${pids[$i]}" || fail "create ${names[$i]} failed: $(cat "$WORK/out/${names[$i]}.create")"
	done
	echo "old key: $old"
	echo "new key: $new"
	for i in 0 1; do
		k=$(akeys "${names[$i]}")
		[[ $(grep -c . <<<"$k") == 1 ]] || fail "${names[$i]} (created during the rotation) has $(grep -c . <<<"$k") authorized keys, want exactly 1:
$k"
		k=$(cut -d' ' -f1,2 <<<"$k")
		[[ $k == "$old" || $k == "$new" ]] || fail "${names[$i]} holds neither key: $k"
		step "${names[$i]}: $([[ $k == "$new" ]] && echo new || echo old) key"
	done
	c=$(uniq_name rotc)
	vm_create "$c" --image busybox
	k=$(akeys "$c")
	assert_eq 1 "$(grep -c . <<<"$k")" "authorized keys in $c"
	assert_eq "$new" "$(cut -d' ' -f1,2 <<<"$k")" "key of a VM made after the rotation"
	assert_eq "$c" "$(bg vm ssh "$c" -- hostname </dev/null)" "vm ssh with the new key"
	step "restart $a: it takes the new key"
	bg vm restart "$a"
	assert_eq "$new" "$(akeys "$a" | cut -d' ' -f1,2)" "key of $a after restart"
	assert_eq "$a" "$(bg vm ssh "$a" -- hostname </dev/null)" "vm ssh to $a after restart"
}
