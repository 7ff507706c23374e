# Helpers for smoke scenarios (sourced in each scenario's own bash process).
#
# Environment from run.sh: BANGER, SOCK (= BANGER_SOCKET), STATE, WORK, NS_D,
# NS_U, RUN, FIXTURE, FIX_LAYOUT, UPLINK_TOKEN, SMOKE_DIR.
#
# A scenario file sets CLASS=pure|global (and COST=<seconds>, a rough
# estimate used to start long scenarios first) and defines run(). Any failing
# command or assertion fails the scenario (set -e); VMs registered with
# track (or made by new_vm / vm_create) are removed when it exits, pass or
# fail, so pure scenarios never leave VMs behind.
set -eE -o pipefail

SCEN_T0=$(date +%s.%N)
TRACKED=()

# bg: the banger CLI talking to this run's daemon. (Shadows bash's job
# control builtin `bg`, which scenarios never need.)
bg() { "$BANGER" --socket "$SOCK" "$@"; }

step() { printf '[%6.1fs] %s\n' "$(echo "$(date +%s.%N) - $SCEN_T0" | bc)" "$*"; }

fail() {
	echo "ASSERTION FAILED: $*"
	exit 1
}

assert_eq() { # want got [what]
	[[ "$1" == "$2" ]] || fail "${3:-value}: want '$1', got '$2'"
}

assert_contains() { # haystack needle [what]
	[[ "$1" == *"$2"* ]] || fail "${3:-output} does not contain '$2'; it is: $1"
}

assert_not_contains() { # haystack needle [what]
	[[ "$1" != *"$2"* ]] || fail "${3:-output} contains '$2'; it is: $1"
}

assert_match() { # string regex [what]
	[[ "$1" =~ $2 ]] || fail "${3:-value} '$1' does not match /$2/"
}

# must_fail CMD...: the command must exit non-zero; its combined output is
# left in $OUT and its status in $RC.
must_fail() {
	set +e
	OUT=$("$@" 2>&1)
	RC=$?
	set -e
	((RC != 0)) || fail "expected failure from: $*; it exited 0 with: $OUT"
	echo "(failed as expected, rc=$RC): $(echo "$OUT" | tail -3)"
}

# capture CMD...: run it, keep its combined output in $OUT and status in $RC
# (does not fail the scenario by itself).
capture() {
	set +e
	OUT=$("$@" 2>&1)
	RC=$?
	set -e
}

# wait_for SECONDS CMD...: retry CMD every 0.5 s until it succeeds.
wait_for() {
	local secs=$1 i
	shift
	for ((i = 0; i < secs * 2; i++)); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.5
	done
	fail "timed out after ${secs}s waiting for: $*"
}

# uniq_name PREFIX: a VM name unique to this run (DNS label).
uniq_name() { printf '%s-%04x%04x\n' "$1" $RANDOM $RANDOM; }

track() { TRACKED+=("$@"); }

# vm_create NAME [create flags...]: create (and boot) a tracked VM.
vm_create() {
	local name=$1
	shift
	track "$name"
	step "vm create $name $*"
	bg vm create --name "$name" "$@"
}

# x NAME CMD...: run CMD in the guest over the agent channel; stdout only.
x() {
	local name=$1
	shift
	bg vm exec "$name" -- "$@"
}

# guest_http NAME HOST [PATH]: the body of http://HOST/PATH fetched from
# inside the guest with busybox nc (busybox-static's wget segfaults in the
# guest: exit 139). Fails if the connection fails.
guest_http() {
	x "$1" sh -c "printf 'GET /${3:-} HTTP/1.0\r\nHost: $2\r\n\r\n' | nc -w 5 $2 80 >/tmp/http.out && sed '1,/^\r\?\$/d' /tmp/http.out"
}

# vm_field NAME FIELD: one field of the VM's `vm ls -a -o json` entry
# (empty if there is no such VM or field).
vm_field() {
	bg vm ls -a -o json | python3 -c 'import json,sys
for v in json.load(sys.stdin) or []:
    if v.get("name") == sys.argv[1]:
        f = v.get(sys.argv[2])
        print("" if f is None else str(f).lower() if isinstance(f, bool) else f)' "$1" "$2"
}

# inspect_field NAME FIELD: one top-level field of `vm inspect -o json`.
inspect_field() {
	bg vm inspect "$1" -o json | python3 -c 'import json,sys
f = json.load(sys.stdin).get(sys.argv[1])
print("" if f is None else f)' "$2"
}

vm_exists() { [[ -n $(vm_field "$1" name) ]]; }
vm_state() { vm_field "$1" state; }
vm_ip() { vm_field "$1" guest_ip; }
vm_pid() { vm_field "$1" pid; }

# rpc METHOD JSON-PARAMS: a raw JSON-RPC call on the daemon socket.
rpc() {
	printf '{"jsonrpc":"2.0","id":1,"method":"%s","params":%s}\n' "$1" "$2" |
		socat -t120 - UNIX-CONNECT:"$SOCK"
}

# registry_count REPO: manifest GETs the loopback registry served for REPO.
registry_count() {
	ip netns exec "$NS_D" curl -fsS http://127.0.0.1:5000/_counts |
		python3 -c 'import json,sys; print(json.load(sys.stdin).get(sys.argv[1],0))' "$1"
}

cleanup_tracked() {
	local rc=$?
	trap - EXIT ERR
	set +e
	if ((${#TRACKED[@]} > 0)); then
		step "cleanup: vm rm -f ${TRACKED[*]}"
		local n
		for n in "${TRACKED[@]}"; do
			"$BANGER" --socket "$SOCK" vm rm -f "$n" >/dev/null 2>&1
		done
	fi
	if ((rc != 0)) && [[ -n ${FAIL_HOOK:-} ]]; then eval "$FAIL_HOOK" >/dev/null 2>&1; fi
	exit $rc
}

on_err() {
	[[ $- == *e* ]] || return 0 # capture/must_fail: failure expected
	local i=0 where=""
	while caller $i >/dev/null; do
		set -- "$@"
		where+=" <- $(caller $i | awk '{n=split($3,p,"/"); print p[n]":"$1" ("$2")"}')"
		i=$((i + 1))
	done
	echo "FAILED (exit $1): $3${where}"
}

scenario_main() {
	trap cleanup_tracked EXIT
	trap 'exit 143' TERM
	trap 'on_err $? $LINENO "$BASH_COMMAND"' ERR
	run
	step "ok"
}
