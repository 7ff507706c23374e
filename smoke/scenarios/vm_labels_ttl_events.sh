# Labels, filters, --ttl and events end to end: `vm ls --filter label=... -q`
# prints exactly the matching IDs, `vm rm --filter` removes only those, a
# --ttl VM is removed by the daemon when it expires, and `banger events -o
# json` reports create, start, stop and rm of a VM's life in order, each
# with its time, id and name.
CLASS=pure
COST=60

run() {
	local a b c ev ev_pid id ids want
	a=$(uniq_name lbl)
	b=$(uniq_name lbl)
	c=$(uniq_name ttl)
	must_fail bg vm create --name "$a-bad" --no-start --label 'bad key=1'
	must_fail bg vm create --name "$c-bad" --no-start --ttl soon
	vm_create "$a" --no-start --label ci=job-7 --label team=x
	vm_create "$b" --no-start --label ci=job-8
	step "vm ls --filter label=ci=job-7 -q: exactly $a's id"
	want=$(inspect_field "$a" id)
	ids=$(bg vm ls -a --filter label=ci=job-7 -q)
	assert_eq "$want" "$ids" "ids matching label=ci=job-7"
	ids=$(bg vm ls -a --filter label=ci -q | sort | tr '\n' ' ')
	assert_eq "$(printf '%s\n' "$want" "$(inspect_field "$b" id)" | sort | tr '\n' ' ')" "$ids" "ids with a ci label"
	step "vm rm --filter label=ci=job-8 removes only $b"
	bg vm rm --filter label=ci=job-8
	vm_exists "$b" && fail "$b is still listed after rm --filter"
	vm_exists "$a" || fail "$a was removed by a filter that does not match it"

	step "events: create, start, stop, rm of one VM, in order"
	ev=$(mktemp)
	bg events -o json --filter type=vm --filter name="$c" >"$ev" &
	ev_pid=$!
	sleep 1
	vm_create "$c" --image busybox --ttl 40s
	assert_match "$(inspect_field "$c" expires_at)" '^20[0-9][0-9]-' "inspect expires_at"
	bg vm stop "$c"
	step "wait for the TTL to remove it (40 s from its create)"
	wait_for 90 not_listed "$c"
	sleep 1
	kill "$ev_pid" 2>/dev/null || true
	wait "$ev_pid" 2>/dev/null || true
	id=$(python3 -c 'import json,sys
evs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
for e in evs:
    assert e["time"] and e["id"] and e["name"] == sys.argv[2], e
print(" ".join(e["action"] for e in evs))' "$ev" "$c")
	rm -f "$ev"
	assert_eq "create start stop rm" "$id" "event actions in order"
}

not_listed() { ! vm_exists "$1"; }
