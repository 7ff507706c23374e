#!/usr/bin/env bash
# banger smoke suite: boots real microVMs through the real daemon and CLI.
#
#   smoke/run.sh [-j N] [-k] [--kernel NAME] [--warm] [SCENARIO...]
#
#   -j N  run pure scenarios in a pool of N workers (default 1)
#   -k    keep the work dir (logs, state) after the run, for debugging;
#         namespaces and processes are always removed
#   --kernel NAME (or SMOKE_KERNEL=NAME): boot every VM that uses the default
#         kernel with this catalog kernel instead (the daemon's
#         default_kernel), e.g. microvm-6.1, which banger builds (cached
#         under $SMOKE_CACHE/kbuild by source version and config hash)
#   --warm (or SMOKE_WARM=1): the daemon's warm_start on, so every create
#         that may start warm does (the first of each shape boots cold and
#         takes the shape's boot snapshot); scenarios run unchanged
#
# Everything runs inside two network namespaces this script creates: the
# daemon's (bsmk-PID-d: bridge, taps, NAT, vmdns, port forwards, the OCI
# registry, the kernel-bundle HTTP server) and an uplink (bsmk-PID-u: an HTTP
# server on 192.0.2.1) joined by a veth pair (TEST-NET-1 addresses). The host's
# own interfaces and firewall are never touched.
#
# Fixtures are cached under $SMOKE_CACHE (default
# ${XDG_CACHE_HOME:-/var/cache}/banger-smoke), keyed by their inputs; see
# smoke/README.md. Environment: SMOKE_CACHE, SMOKE_BREAK=1 (makes
# vm_run_command assert something false, to check failure handling),
# SMOKE_TIMEOUT (per scenario seconds, default 600; a scenario's own
# TIMEOUT= line may raise it).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SMOKE_DIR=$ROOT/smoke
JOBS=1
KEEP=0
SMOKE_KERNEL=${SMOKE_KERNEL:-}
SMOKE_WARM=${SMOKE_WARM:-}
args=()
while (($# > 0)); do
	case $1 in
	--kernel) SMOKE_KERNEL=${2:?--kernel wants a kernel name}; shift 2 ;;
	--kernel=*) SMOKE_KERNEL=${1#--kernel=}; shift ;;
	--warm) SMOKE_WARM=1; shift ;;
	*) args+=("$1"); shift ;;
	esac
done
set -- "${args[@]}"
[[ -z $SMOKE_KERNEL || $SMOKE_KERNEL =~ ^[a-z0-9][a-z0-9._-]*$ ]] || { echo "smoke: bad --kernel '$SMOKE_KERNEL'" >&2; exit 2; }
while getopts "j:kh" opt; do
	case $opt in
	j) JOBS=$OPTARG ;;
	k) KEEP=1 ;;
	*) sed -n '2,24p' "$0"; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
[[ $JOBS =~ ^[1-9][0-9]*$ ]] || { echo "smoke: -j wants a positive integer, got '$JOBS'" >&2; exit 2; }

if [[ $(id -u) != 0 ]]; then
	echo "smoke: must run as root (it creates network namespaces and boots VMs); try: sudo make smoke" >&2
	exit 2
fi
for t in ip nft qemu-system-x86_64 mkfs.ext4 busybox dig curl ssh socat sqlite3 tar gzip sha256sum timeout flock; do
	command -v "$t" >/dev/null || { echo "smoke: missing tool '$t' (apt-get install -y iproute2 nftables qemu-system-x86 e2fsprogs busybox-static dnsutils curl openssh-client socat sqlite3)" >&2; exit 2; }
done
BANGER=$ROOT/bin/banger
FIXTURE=$ROOT/bin/banger-fixture
for b in "$BANGER" "$ROOT/bin/banger-init" "$FIXTURE"; do
	[[ -x $b ]] || { echo "smoke: $b missing (run: make build && go build -o bin/banger-fixture ./cmd/banger-fixture)" >&2; exit 2; }
done

SMOKE_CACHE=${SMOKE_CACHE:-${XDG_CACHE_HOME:-/var/cache}/banger-smoke}
SMOKE_TIMEOUT=${SMOKE_TIMEOUT:-600}
RUN=bsmk-$$
NS_D=$RUN-d
NS_U=$RUN-u
WORK=$(mktemp -d "/var/tmp/$RUN.XXXXXX")
T0=$(date +%s)

log() { printf '[smoke %4ds] %s\n' $(($(date +%s) - T0)) "$*"; }
die() { log "setup failed: $*"; exit 1; }

# ---- cleanup: everything this run started, whatever happened ----------
CLEANED=0
cleanup() {
	local rc=$?
	[[ $CLEANED == 1 ]] && return
	CLEANED=1
	trap '' INT TERM
	# Scenario workers first (they may be mid-create): each runs under
	# timeout, which leads its own process group; TERM runs their EXIT traps
	# (vm rm -f of their VMs) while the daemon is still up.
	local p
	for p in $(cat "$WORK"/pids/* 2>/dev/null); do kill -TERM -- "-$p" 2>/dev/null; done
	wait 2>/dev/null
	[[ -n ${FG_PID:-} ]] && kill -TERM "$FG_PID" 2>/dev/null
	if [[ -n ${FIXDAEMON_PID:-} ]]; then kill -TERM "$FIXDAEMON_PID" 2>/dev/null; wait "$FIXDAEMON_PID" 2>/dev/null; fi
	local ns i pids
	for ns in "$NS_D" "$NS_U"; do
		ip netns list 2>/dev/null | grep -qw "^$ns" || continue
		for i in 1 2 3 4 5 6 7 8 9 10; do
			pids=$(ip netns pids "$ns" 2>/dev/null)
			[[ -z $pids ]] && break
			if ((i < 4)); then kill -TERM $pids 2>/dev/null; else kill -KILL $pids 2>/dev/null; fi
			sleep 0.5
		done
		ip netns del "$ns" 2>/dev/null
	done
	if [[ -n ${INTERRUPTED:-} ]]; then
		local n_pass n_all
		n_pass=$(grep -l PASS "$WORK"/res/* 2>/dev/null | wc -l)
		n_all=${#SCEN[@]}
		echo "interrupted ($INTERRUPTED): scenarios not finished count as failed"
		echo "$n_pass passed, $((n_all - n_pass)) failed"
	fi
	[[ $KEEP == 1 ]] || rm -rf "$WORK"
	exit $rc
}
trap cleanup EXIT
trap 'INTERRUPTED=SIGINT; exit 130' INT
trap 'INTERRUPTED=SIGTERM; exit 143' TERM
SCEN=()

# ---- which scenarios ----------------------------------------------------
if (($# > 0)); then
	SCEN=("$@")
else
	SCEN=()
	for f in "$SMOKE_DIR"/scenarios/*.sh; do SCEN+=("$(basename "$f" .sh)"); done
fi
PURE=() GLOBAL=()
SMOKE_IMAGES=""
for s in "${SCEN[@]}"; do
	f=$SMOKE_DIR/scenarios/$s.sh
	[[ -f $f ]] || die "no scenario $s ($f)"
	class=$(sed -n 's/^CLASS=\([a-z]*\).*/\1/p' "$f" | head -1)
	cost=$(sed -n 's/^COST=\([0-9]*\).*/\1/p' "$f" | head -1)
	case $class in
	pure) PURE+=("${cost:-10} $s") ;;
	global) GLOBAL+=("$s") ;;
	*) die "scenario $s declares no CLASS=pure|global" ;;
	esac
	# IMAGES="name ...": catalog images beyond the snapshot's, built once
	# and cached (fixtures.sh), linked into this run's state only if asked.
	for img in $(sed -n 's/^IMAGES="\([a-z0-9 ._-]*\)".*/\1/p' "$f" | head -1); do
		[[ " $SMOKE_IMAGES " == *" $img "* ]] || SMOKE_IMAGES+="${SMOKE_IMAGES:+ }$img"
	done
done
# Longest first: the pool drains evenly (LPT scheduling).
mapfile -t PURE < <(printf '%s\n' "${PURE[@]}" | sort -k1,1nr -k2 | awk 'NF{print $2}')

# ---- fixtures ---------------------------------------------------------
source "$SMOKE_DIR/fixtures.sh"
mkdir -p "$SMOKE_CACHE"
fixtures_ensure || die "fixtures"

# ---- namespaces ---------------------------------------------------------
log "namespaces $NS_D (daemon) and $NS_U (uplink)"
ip netns add "$NS_U" || die "ip netns add $NS_U"
ip netns add "$NS_D" || die "ip netns add $NS_D"
VD=bsd$$ VU=bsu$$
ip link add "$VD" type veth peer name "$VU" netns "$NS_U" || die "veth"
ip link set "$VD" netns "$NS_D" || die "veth move"
nsd() { ip netns exec "$NS_D" "$@"; }
nsu() { ip netns exec "$NS_U" "$@"; }
nsd ip link set lo up
nsu ip link set lo up
nsu ip addr add 192.0.2.1/24 dev "$VU"
nsu ip link set "$VU" up
nsd ip addr add 192.0.2.2/24 dev "$VD"
nsd ip link set "$VD" up
nsd ip route add default via 192.0.2.1 || die "default route"
# Uplink page: a guest with --nat fetches it through the daemon's NAT.
mkdir -p "$WORK/www" "$WORK/kwww"
UPLINK_TOKEN=uplink-$RUN-$RANDOM
echo "$UPLINK_TOKEN" >"$WORK/www/index.html"
# Servers and the daemon are disowned: `wait` below then waits for scenario
# workers only; the namespace teardown kills them.
# (Direct `ip netns exec … &`, not through a function: a wrapping subshell
# would print "Terminated" when teardown kills its child.)
ip netns exec "$NS_U" busybox httpd -f -p 192.0.2.1:80 -h "$WORK/www" >"$WORK/uplink-httpd.log" 2>&1 &
disown
# Loopback servers in the daemon's namespace (the daemon pulls from there).
ip netns exec "$NS_D" "$FIXTURE" registry -addr 127.0.0.1:5000 >"$WORK/registry.log" 2>&1 &
disown
cp "$FIX_KBUNDLE" "$WORK/kwww/kernel.tar.gz"
ip netns exec "$NS_D" busybox httpd -f -p 127.0.0.1:8089 -h "$WORK/kwww" >"$WORK/kernel-httpd.log" 2>&1 &
disown

# ---- the daemon -----------------------------------------------------------
STATE=$WORK/state
RT=$WORK/run
mkdir -p "$RT"
snapshot_restore "$STATE" || die "restore state snapshot"
if [[ -n $SMOKE_KERNEL && $SMOKE_KERNEL != debian-cloud-amd64 ]]; then
	cp -a "$FIX_SMOKE_KERNEL" "$STATE/kernels/$SMOKE_KERNEL" || die "copy kernel $SMOKE_KERNEL"
fi
cat >"$WORK/kernels.json" <<EOF
{"kernels": [{"name": "smoke-url", "description": "smoke: debian cloud kernel bundle over loopback HTTP",
  "source": {"type": "url", "url": "http://127.0.0.1:8089/kernel.tar.gz", "sha256": "$(cat "$FIX_KBUNDLE.sha256")"}}]}
EOF
cat >"$WORK/config.toml" <<EOF
# smoke: a boot that cannot become ready fails after this long (vm_boot_failure)
ready_timeout = "60s"
EOF
[[ -z $SMOKE_KERNEL ]] || echo "default_kernel = \"$SMOKE_KERNEL\"" >>"$WORK/config.toml"
[[ $SMOKE_WARM != 1 ]] || echo "warm_start = true" >>"$WORK/config.toml"
SOCK=$RT/banger.sock
start_daemon() {
	# setsid: a scenario's timeout (which kills its process group) must not
	# take a daemon it restarted down with it.
	setsid ip netns exec "$NS_D" "$BANGER" daemon --config "$WORK/config.toml" --state-dir "$STATE" --runtime-dir "$RT" \
		--bridge-ip 172.30.0.1/24 --kernel-catalog "$WORK/kernels.json" --kernel-build-cache "$SMOKE_CACHE/kbuild" >>"$WORK/daemon.log" 2>&1 &
	echo $! >"$WORK/daemon.pid"
	disown
	local i
	for i in $(seq 1 100); do
		"$BANGER" --socket "$SOCK" version 2>/dev/null | grep -qi daemon && return 0
		sleep 0.2
	done
	return 1
}
log "daemon in $NS_D, state $STATE"
start_daemon || { tail -20 "$WORK/daemon.log"; die "daemon did not answer on $SOCK"; }
for i in $(seq 1 50); do nsd curl -fsS -o /dev/null http://127.0.0.1:5000/v2/ 2>/dev/null && break; sleep 0.2; done

# The kernel VMs boot by default (scenarios compare uname -r with it).
SMOKE_KERNEL_NAME=${SMOKE_KERNEL:-debian-cloud-amd64}
export BANGER SOCK STATE RT WORK NS_D NS_U RUN FIXTURE UPLINK_TOKEN SMOKE_DIR SMOKE_CACHE FIX_LAYOUT FIX_KBUNDLE SMOKE_IMAGES SMOKE_KERNEL_NAME
export BANGER_SOCKET=$SOCK
export -f start_daemon nsd nsu log snapshot_restore waitfg
export FIX_SNAPSHOT FIX_IMAGES_KEY
export T0

# ---- scenarios ----------------------------------------------------------
mkdir -p "$WORK/out" "$WORK/res" "$WORK/pids"

run_one() {
	local s=$1 t0 t1 rc lim
	t0=$(date +%s.%N)
	# A scenario may declare TIMEOUT=<seconds> (boots of a whole systemd
	# under TCG take minutes); SMOKE_TIMEOUT, if larger, wins.
	lim=$(sed -n 's/^TIMEOUT=\([0-9]*\).*/\1/p' "$SMOKE_DIR/scenarios/$s.sh" | head -1)
	((${lim:-0} > SMOKE_TIMEOUT)) || lim=$SMOKE_TIMEOUT
	timeout -k 15 "$lim" bash -c '
		source "$SMOKE_DIR/lib.sh"
		source "$SMOKE_DIR/scenarios/$1.sh"
		scenario_main
	' _ "$s" >"$WORK/out/$s.log" 2>&1 &
	echo $! >"$WORK/pids/$s"
	wait $!
	rc=$?
	rm -f "$WORK/pids/$s"
	t1=$(date +%s.%N)
	local res=PASS
	((rc == 124)) && echo "TIMEOUT after ${lim}s" >>"$WORK/out/$s.log"
	((rc != 0)) && res=FAIL
	echo "$res" >"$WORK/res/$s"
	{
		flock 9
		printf -- '--- %s %s (%.1fs)\n' "$res" "$s" "$(echo "$t1 - $t0" | bc 2>/dev/null || echo 0)"
		sed 's/^/    /' "$WORK/out/$s.log"
	} 9>"$WORK/print.lock"
}

log "${#PURE[@]} pure scenarios, -j $JOBS; then ${#GLOBAL[@]} global"
TP0=$(date +%s.%N)
running=0
for s in "${PURE[@]}"; do
	while ((running >= JOBS)); do
		wait -n
		running=$((running - 1))
	done
	run_one "$s" &
	running=$((running + 1))
done
wait
TP1=$(date +%s.%N)
for s in "${GLOBAL[@]}"; do
	run_one "$s"
done
TG1=$(date +%s.%N)

pass=0 fail=0 failed=()
for s in "${SCEN[@]}"; do
	if [[ $(cat "$WORK/res/$s" 2>/dev/null) == PASS ]]; then
		pass=$((pass + 1))
	else
		fail=$((fail + 1))
		failed+=("$s")
	fi
done
if ((fail > 0)); then
	echo "--- daemon log (last 40 lines)"
	tail -40 "$WORK/daemon.log" | sed 's/^/    /'
	echo "failed: ${failed[*]}"
fi
printf 'pool %.1fs (-j %d), global %.1fs, total %ds\n' "$(echo "$TP1 - $TP0" | bc)" "$JOBS" "$(echo "$TG1 - $TP1" | bc)" $(($(date +%s) - T0))
[[ $KEEP == 1 ]] && echo "kept work dir $WORK"
echo "$pass passed, $fail failed"
((fail == 0))
