#!/usr/bin/env bash
# Benchmarks quoted in BENCHMARKS.md. Each prints the figure it measures.
# Usage: scripts/bench.sh [vmls|boot|hostcost|density|pull|cp|snap|initmodes|shares|kernel|k8s]
set -euo pipefail
cd "$(dirname "$0")/.."
which="${1:-all}"
bin=$PWD/bin/banger
work=$(mktemp -d /tmp/banger-bench.XXXXXX)
cleanup() { [ -n "${dpid:-}" ] && kill "$dpid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

start_daemon() {
  "$bin" daemon --state-dir "$work/state" --runtime-dir "$work/run" --bridge-ip 10.250.0.1/16 2>"$work/daemon.log" &
  dpid=$!
  export BANGER_SOCKET=$work/run/banger.sock
  for _ in $(seq 100); do "$bin" version 2>/dev/null | grep -q daemon && return; sleep 0.05; done
  echo "daemon did not start"; cat "$work/daemon.log"; exit 1
}

bench_vmls() {
  start_daemon
  seq 1000 | xargs -P 8 -I{} "$bin" vm create --no-start --name "bench-{}" --image bench >/dev/null 2>&1
  n=$("$bin" vm ls -a -o json | grep -c '"id"')
  echo "vm ls -a -o json with $n VMs in the store:"
  runs=20
  start=$(date +%s%N)
  for _ in $(seq $runs); do "$bin" vm ls -a -o json >/dev/null; done
  end=$(date +%s%N)
  echo "  mean wall time over $runs runs: $(( (end - start) / runs / 1000000 )) ms"
}

# bench_boot: `vm create` (create -> agent ready) against a bare qemu boot
# of the same kernel, initramfs and disks to banger-init's "ready" line,
# alternating, in a network namespace made here. Also the idle RSS of one
# VM's qemu process.
# setup_ns: pull the default kernel and import the busybox fixture with a
# daemon in the root namespace (it touches no interface), then run the
# daemon in a network namespace made here, where VMs get their taps.
setup_ns() {
  ns=bbench$$
  ip netns add $ns; ip netns exec $ns ip link set lo up
  trap 'for p in $(ip netns pids '$ns' 2>/dev/null); do kill -9 $p; done; sleep 0.3; ip netns del '$ns' 2>/dev/null; cleanup' EXIT
  sock=$work/run/banger.sock; export BANGER_SOCKET=$sock
  # Pull in the root namespace (touches no interface), boot in $ns.
  kcache=${SMOKE_CACHE:-/var/cache/banger-smoke}/kbuild
  "$bin" daemon --state-dir "$work/state" --runtime-dir "$work/run" --kernel-build-cache "$kcache" 2>"$work/daemon0.log" & dpid=$!
  for _ in $(seq 100); do "$bin" version 2>/dev/null | grep -q daemon && break; sleep 0.05; done
  for k in debian-cloud-amd64 ${EXTRA_KERNELS:-}; do
    "$bin" kernel pull $k >/dev/null 2>&1 || { echo "kernel pull $k failed"; exit 1; }
  done
  go build -o "$work/fixture" ./cmd/banger-fixture
  "$work/fixture" busybox-layout "$work/bb"
  "$bin" image import "$work/bb" --name busybox >/dev/null 2>&1
  kill $dpid; wait $dpid 2>/dev/null || true
  ip netns exec $ns "$bin" daemon --state-dir "$work/state" --runtime-dir "$work/run" 2>"$work/daemon.log" & dpid=$!
  for _ in $(seq 100); do "$bin" version 2>/dev/null | grep -q daemon && break; sleep 0.05; done
}

bench_boot() {
  runs=${BOOT_RUNS:-5}
  setup_ns
  "$bin" vm create --image busybox --name warm >/dev/null 2>&1   # builds the initramfs once
  pid=$("$bin" vm inspect warm -o json | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')
  sleep 5
  echo "idle VM qemu RSS: $(awk '/VmRSS/{print $2/1024 " MiB"}' /proc/$pid/status) (1 vCPU, 512 MiB guest, TCG)"
  mapfile -d '' qargs < /proc/$pid/cmdline
  vmdir=$("$bin" vm inspect warm -o json | sed -n 's/.*"dir": "\(.*\)".*/\1/p')
  # QEMU gets its disks as fdsets (-add-fd fd=N,set=S; set S is disk S in
  # vda.. order: rootfs, overlay, work disk, modules disk): find their
  # files among the running QEMU's open files.
  declare -A disk
  for f in /proc/$pid/fd/*; do
    p=$(readlink "$f")
    case "${p##*/}" in rootfs.ext4) disk[1]=$p;; system.cow) disk[2]=$p;; root.ext4) disk[3]=$p;; modules.ext4) disk[4]=$p;; esac
  done
  "$bin" vm stop warm >/dev/null 2>&1
  # The shape's boot snapshot (warm start), taken by this first --warm create.
  "$bin" vm create --warm --image busybox --name wseed >/dev/null 2>&1; "$bin" vm rm -f wseed >/dev/null 2>&1
  bare=$work/bare; mkdir -p $bare
  bt=(); bg=(); bw=()
  for i in $(seq $runs); do
    s=$(date +%s%N); "$bin" vm create --image busybox --name b$i >/dev/null 2>&1 || echo "create b$i failed"; e=$(date +%s%N)
    bg+=($(( (e-s)/1000000 )))
    "$bin" vm rm -f b$i >/dev/null 2>&1
    s=$(date +%s%N); "$bin" vm create --warm --image busybox --name w$i >/dev/null 2>&1 || echo "warm create w$i failed"; e=$(date +%s%N)
    bw+=($(( (e-s)/1000000 )))
    "$bin" vm inspect w$i -o json | grep -q '"start": "warm"' || echo "w$i did not start warm"
    "$bin" vm rm -f w$i >/dev/null 2>&1
    cp --sparse=always "$vmdir/system.cow" "$vmdir/root.ext4" $bare/
    a=()
    for x in "${qargs[@]}"; do
      x=${x//$vmdir\/system.cow/$bare/system.cow}; x=${x//$vmdir\/root.ext4/$bare/root.ext4}
      x=${x//$vmdir\/console.log/$bare/console.log}
      a+=("$x")
    done
    # Same devices, with a tap of its own on the bridge; sockets and the
    # pidfile move into $bare.
    # The console is a socket QEMU waits on (wait=on): a file here.
    b=()
    for x in "${a[@]}"; do
      x=$(echo "$x" | sed -e "s#$work/run/vms[-0-9a-f]*/[0-9a-f]*/#$bare/#g" -e 's/ifname=bg[r0-9a-f]*/ifname=bgrbare/')
      case "$x" in socket,id=console,*) x="file,id=console,path=$bare/console.log";; esac
      b+=("$x")
    done
    ip -n $ns link show bgrbare >/dev/null 2>&1 || {
      ip -n $ns tuntap add bgrbare mode tap; ip -n $ns link set bgrbare master banger0 up; }
    rm -f $bare/console.log
    # The same fds, the VM's own disks replaced by the copies: a set's
    # first fd read-only, a writable disk's second read-write.
    redir=""; declare -A seen=()
    for x in "${b[@]}"; do
      case "$x" in fd=*,set=*) n=${x#fd=}; n=${n%%,*}; set=${x##*set=}; p=${disk[$set]}
        p=${p/$vmdir\/system.cow/$bare/system.cow}; p=${p/$vmdir\/root.ext4/$bare/root.ext4}
        if [ -n "${seen[$set]:-}" ]; then redir+=" $n<>$p"; else redir+=" $n<$p"; seen[$set]=1; fi;; esac
    done
    s=$(date +%s%N)
    eval "ip netns exec $ns \"\${b[@]}\" >/dev/null 2>&1 $redir &"; qp=$!
    for _ in $(seq 1200); do grep -q "banger-init: ready" $bare/console.log 2>/dev/null && break; sleep 0.05; done
    e=$(date +%s%N); kill -9 $qp 2>/dev/null; wait $qp 2>/dev/null || true
    bt+=($(( (e-s)/1000000 )))
  done
  echo "vm create -> ready (ms):        ${bg[*]}"
  echo "vm create --warm -> ready (ms): ${bw[*]}"
  echo "bare qemu -> ready (ms):        ${bt[*]}"
  sb=0; st=0; sw=0; for v in "${bg[@]}"; do sb=$((sb+v)); done; for v in "${bt[@]}"; do st=$((st+v)); done; for v in "${bw[@]}"; do sw=$((sw+v)); done
  echo "mean: banger $((sb/runs)) ms, warm $((sw/runs)) ms, bare $((st/runs)) ms, ratio cold/bare $(awk "BEGIN{printf \"%.2f\", $sb/$st}"), warm/bare $(awk "BEGIN{printf \"%.2f\", $sw/$st}")"
}

# bench_hostcost: the host's share of a cold `vm create`, per stage, from
# the daemon's op log (each stage line carries the previous stage's
# duration): everything from the RPC to the VMM's QMP socket answering
# (`boot` is QEMU's own start-up: exec, machine set-up, kernel load).
# HOST_RUNS creates after one that builds the initramfs and disk templates.
bench_hostcost() {
  runs=${HOST_RUNS:-10}
  setup_ns
  "$bin" vm create --image busybox --name hseed >/dev/null 2>&1; "$bin" vm rm -f hseed >/dev/null 2>&1
  for i in $(seq $runs); do
    "$bin" vm create --image busybox --name h$i >/dev/null 2>&1 || echo "create h$i failed"
    "$bin" vm rm -f h$i >/dev/null 2>&1
  done
  echo "host-side stages of a cold vm create, $runs runs (ms: median, then all):"
  awk '/op=vm.create/ && / name=h[0-9]+ / && /msg=stage/ {
      op=""; st=""; prev=0
      for (i=1; i<=NF; i++) {
        if ($i ~ /^op_id=/) op=substr($i,7)
        if ($i ~ /^stage=/) st=substr($i,7)
        if ($i ~ /^prev_stage_ms=/) prev=substr($i,15)
      }
      if (done[op]) next
      if ((op SUBSEP st) in had) st = st "(again)"
      had[op SUBSEP st] = 1
      name = (op in last) ? last[op] : "validate"
      d[name] = d[name] " " prev; tot[op] += prev
      if (st == "wait_ready") { done[op]=1; t = t " " tot[op]; next }
      if (!(st in seen)) { seen[st]=1; order[++n]=st }
      last[op]=st
    }
    function med(list,   a, k, i, j, x) {
      k = split(list, a, " ")
      for (i=2; i<=k; i++) { x=a[i]; for (j=i-1; j>=1 && a[j]+0>x+0; j--) a[j+1]=a[j]; a[j+1]=x }
      return a[int((k+1)/2)]
    }
    END {
      printf "  %-22s %5s  %s\n", "validate", med(d["validate"]), d["validate"]
      for (i=1; i<=n; i++) printf "  %-22s %5s  %s\n", order[i], med(d[order[i]]), d[order[i]]
      printf "  %-22s %5s  %s\n", "TOTAL to QMP up", med(t), t
    }' "$work/daemon.log"
}

# bench_density: DENSITY_VMS idle busybox VMs (256 MiB) per round, one
# round per TCG translation cache size in TB_SIZES (MiB; 0: QEMU's
# default), each with a daemon started with --tcg-tb-size: the time to
# start them all (one at a time; DENSITY_WARM=1: `vm create --warm`, the
# shape's boot snapshot taken by a first create that is not counted),
# every VM's QEMU RSS and idle CPU (utime+stime over 30 s, 20 s after the
# last one was ready), how many answer `vm exec`, the host's available
# memory, and create -> ready of one more VM (cold) with the others idle.
# The 100-VM figure needs a quiet host.
bench_density() {
  n=${DENSITY_VMS:-5}
  warm=""; [ "${DENSITY_WARM:-}" = 1 ] && warm=--warm
  setup_ns
  hz=$(getconf CLK_TCK)
  for tb in ${TB_SIZES:-0 32}; do
    kill $dpid; wait $dpid 2>/dev/null || true
    ip netns exec $ns "$bin" daemon --state-dir "$work/state" --runtime-dir "$work/run" --tcg-tb-size "$tb" 2>>"$work/daemon.log" & dpid=$!
    for _ in $(seq 100); do "$bin" version 2>/dev/null | grep -q daemon && break; sleep 0.05; done
    if [ -n "$warm" ]; then "$bin" vm create $warm --image busybox --memory 256 --name dseed >/dev/null 2>&1; "$bin" vm rm -f dseed >/dev/null 2>&1; fi
    avail0=$(awk '/MemAvailable/{print int($2/1024)}' /proc/meminfo)
    t=$(date +%s%N); failed=0
    # Stop short of starving the host: the goal leaves 4 GiB free, and an
    # OOM here takes the whole machine (and every other VM) with it.
    floor=${DENSITY_MIN_AVAIL_MB:-3072}; stopped=""
    for i in $(seq $n); do
      a=$(awk '/MemAvailable/{print int($2/1024)}' /proc/meminfo)
      if [ "$a" -lt "$floor" ]; then stopped="stopped before d$i: MemAvailable $a MiB < $floor MiB"; n=$((i-1)); break; fi
      "$bin" vm create $warm --image busybox --memory 256 --name d$i >/dev/null 2>&1 || { echo "create d$i failed"; failed=$((failed+1)); }
    done
    all=$(ms_since $t)
    [ -n "$stopped" ] && echo "  $stopped"
    sleep 20
    pids=(); for i in $(seq $n); do p=$("$bin" vm inspect d$i -o json 2>/dev/null | sed -n 's/.*"pid": \([0-9]*\).*/\1/p'); [ -n "$p" ] && pids+=($p); done
    ticks() { awk '{print $14+$15}' /proc/$1/stat; }
    declare -A t0; for p in "${pids[@]}"; do t0[$p]=$(ticks $p); done
    sleep 30
    rss=(); cpu=()
    for p in "${pids[@]}"; do
      rss+=($(awk '/VmRSS/{print int($2/1024)}' /proc/$p/status))
      cpu+=($(awk -v a=${t0[$p]} -v b=$(ticks $p) -v hz=$hz 'BEGIN{printf "%.2f", (b-a)/hz/30*100}'))
    done
    avail=$(awk '/MemAvailable/{print int($2/1024)}' /proc/meminfo)
    ok=0; for i in $(seq $n); do timeout 60 "$bin" vm exec d$i -- true >/dev/null 2>&1 && ok=$((ok+1)); done
    t=$(date +%s%N); "$bin" vm create --cold --image busybox --memory 256 --name dn >/dev/null 2>&1 || echo "create dn failed"; one=$(ms_since $t)
    stat() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1; s+=$1} END{printf "min %s median %s max %s mean %.2f", a[1], a[int((NR+1)/2)], a[NR], s/NR}'; }
    echo "tb-size ${tb} MiB (0: QEMU's default), $n idle VMs ${warm:-(cold creates)}:"
    echo "  started: $((n-failed))/$n in $all ms; answering vm exec: $ok/$n"
    echo "  QEMU RSS (MiB):            $(stat "${rss[@]}")"
    echo "  idle CPU (% of a core):    $(stat "${cpu[@]}"); load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "  host MemAvailable: $avail0 MiB before, $avail MiB with them idle; one more (cold) with them idle: $one ms"
    [ -n "${DENSITY_ALL:-}" ] && { echo "  RSS all: ${rss[*]}"; echo "  CPU all: ${cpu[*]}"; }
    for i in $(seq $n) n; do "$bin" vm rm -f d$i >/dev/null 2>&1; done
  done
}

ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

# bench_snap: pause -> resume latency, `vm snapshot` of a 256 MiB VM (wall
# time, how long the source was paused, state size), and, alternating,
# `vm create --from SNAP` -> ready against a cold `vm create` -> ready of
# the same shape, in the namespace of setup_ns.
bench_snap() {
  runs=${SNAP_RUNS:-5}
  setup_ns
  mean() { local s=0; for v in "$@"; do s=$((s+v)); done; echo $((s/$#)); }
  "$bin" vm create --image busybox --name src --memory 256 >/dev/null
  pz=(); rz=()
  for i in $(seq $runs); do
    t=$(date +%s%N); "$bin" vm pause src >/dev/null; pz+=($(ms_since $t))
    t=$(date +%s%N); "$bin" vm resume src >/dev/null; rz+=($(ms_since $t))
  done
  echo "vm pause (ms):                   ${pz[*]}  mean $(mean "${pz[@]}")"
  echo "vm resume -> agent answers (ms): ${rz[*]}  mean $(mean "${rz[@]}")"
  sw=(); sp=()
  for i in $(seq $runs); do
    t=$(date +%s%N); j=$("$bin" vm snapshot src --name s$i -o json); sw+=($(ms_since $t))
    sp+=($(echo "$j" | sed -n 's/.*"paused_ms": \([0-9]*\).*/\1/p'))
    sb=$(echo "$j" | sed -n 's/.*"state_bytes": \([0-9]*\).*/\1/p'); db=$(echo "$j" | sed -n 's/.*"disk_bytes": \([0-9]*\).*/\1/p')
  done
  echo "vm snapshot, 256 MiB guest (ms): ${sw[*]}  mean $(mean "${sw[@]}")"
  echo "  source paused (ms):            ${sp[*]}  mean $(mean "${sp[@]}")"
  echo "  state $((sb/1048576)) MiB, disk copies $((db/1048576)) MiB on disk"
  fr=(); cc=()
  for i in $(seq $runs); do
    t=$(date +%s%N); "$bin" vm create --from s1 --name f$i >/dev/null || echo "create --from failed"; fr+=($(ms_since $t))
    t=$(date +%s%N); "$bin" vm create --image busybox --memory 256 --name c$i >/dev/null || echo "cold create failed"; cc+=($(ms_since $t))
    "$bin" vm rm -f f$i c$i >/dev/null
  done
  t=$(date +%s%N); "$bin" vm fork src --name fk >/dev/null; fk=$(ms_since $t)
  echo "vm create --from -> ready (ms):  ${fr[*]}  mean $(mean "${fr[@]}")"
  echo "cold vm create -> ready (ms):    ${cc[*]}  mean $(mean "${cc[@]}")"
  echo "ratio from-snapshot / cold: $(awk "BEGIN{printf \"%.2f\", $(mean "${fr[@]}")/$(mean "${cc[@]}")}")x"
  echo "vm fork -> ready (ms): $fk"
}

# bench_pull: `image pull` (OCI pull + layer apply + ext4 build + work seed)
# of a ~100 MB, 6-layer image from a loopback registry, cold and re-pulled,
# against skopeo copy + umoci unpack + mkfs.ext4 -d on the same image.
bench_pull() {
  runs=${PULL_RUNS:-3}
  go build -o "$work/fixture" ./cmd/banger-fixture
  "$work/fixture" registry -addr 127.0.0.1:0 > "$work/reg.addr" & rpid=$!
  for _ in $(seq 50); do [ -s "$work/reg.addr" ] && break; sleep 0.1; done
  addr=$(head -1 "$work/reg.addr"); ref=$addr/big:1
  "$work/fixture" push-big "$ref"
  start_daemon
  bc=(); br=(); sc=(); sr=()
  for i in $(seq $runs); do
    rm -rf "$work/state/cache"
    t=$(date +%s%N); "$bin" image pull "$ref" >/dev/null 2>&1; bc+=($(ms_since $t))
    "$bin" image rm "$ref" >/dev/null
    t=$(date +%s%N); "$bin" image pull "$ref" >/dev/null 2>&1; br+=($(ms_since $t))
    "$bin" image rm "$ref" >/dev/null
    rm -rf "$work/oci" "$work/bundle" "$work/rootfs.ext4"
    t=$(date +%s%N)
    skopeo copy -q --src-tls-verify=false "docker://$ref" "oci:$work/oci:big" &&
      umoci unpack --image "$work/oci:big" "$work/bundle" >/dev/null 2>&1 &&
      mkfs.ext4 -q -F -d "$work/bundle/rootfs" "$work/rootfs.ext4" $(( $(du -sm "$work/bundle/rootfs" | cut -f1) * 12 / 10 + 64 ))M
    sc+=($(ms_since $t))
    rm -rf "$work/bundle" "$work/rootfs.ext4"
    t=$(date +%s%N)   # re-pull: the OCI layout already holds every blob
    skopeo copy -q --src-tls-verify=false "docker://$ref" "oci:$work/oci:big" &&
      umoci unpack --image "$work/oci:big" "$work/bundle" >/dev/null 2>&1 &&
      mkfs.ext4 -q -F -d "$work/bundle/rootfs" "$work/rootfs.ext4" $(( $(du -sm "$work/bundle/rootfs" | cut -f1) * 12 / 10 + 64 ))M
    sr+=($(ms_since $t))
  done
  kill $rpid
  mean() { local s=0; for v in "$@"; do s=$((s+v)); done; echo $((s/$#)); }
  echo "image: $ref ($(du -sh "$work/oci" | cut -f1) in the OCI layout)"
  echo "banger image pull, cold (ms):        ${bc[*]}  mean $(mean "${bc[@]}")"
  echo "banger image pull, re-pull (ms):     ${br[*]}  mean $(mean "${br[@]}")"
  echo "skopeo+umoci+mkfs, cold (ms):        ${sc[*]}  mean $(mean "${sc[@]}")"
  echo "skopeo+umoci+mkfs, re-pull (ms):     ${sr[*]}  mean $(mean "${sr[@]}")"
  echo "ratio cold: $(awk "BEGIN{printf \"%.2f\", $(mean "${bc[@]}")/$(mean "${sc[@]}")}")x; re-pull vs skopeo cold: $(awk "BEGIN{printf \"%.2f\", $(mean "${br[@]}")/$(mean "${sc[@]}")}")x"
}

# bench_cp: `vm cp` of a 200 MiB random file into and out of a VM against
# scp through `vm ssh-config` (OpenSSH's SFTP mode, the same vm.proxy
# path), alternating, in a network namespace made here. sha256 checked.
bench_cp() {
  runs=${CP_RUNS:-3}
  ns=bcp$$
  ip netns add $ns; ip netns exec $ns ip link set lo up
  trap 'for p in $(ip netns pids '$ns' 2>/dev/null); do kill -9 $p; done; sleep 0.3; ip netns del '$ns' 2>/dev/null; cleanup' EXIT
  export BANGER_SOCKET=$work/run/banger.sock
  kcache=${SMOKE_CACHE:-/var/cache/banger-smoke}/kbuild
  "$bin" daemon --state-dir "$work/state" --runtime-dir "$work/run" --kernel-build-cache "$kcache" 2>"$work/daemon0.log" & dpid=$!
  for _ in $(seq 100); do "$bin" version 2>/dev/null | grep -q daemon && break; sleep 0.05; done
  for k in debian-cloud-amd64 ${EXTRA_KERNELS:-}; do
    "$bin" kernel pull $k >/dev/null 2>&1 || { echo "kernel pull $k failed"; exit 1; }
  done
  go build -o "$work/fixture" ./cmd/banger-fixture
  "$work/fixture" busybox-layout "$work/bb"
  "$bin" image import "$work/bb" --name busybox >/dev/null 2>&1
  kill $dpid; wait $dpid 2>/dev/null || true
  ip netns exec $ns "$bin" daemon --state-dir "$work/state" --runtime-dir "$work/run" 2>"$work/daemon.log" & dpid=$!
  for _ in $(seq 100); do "$bin" version 2>/dev/null | grep -q daemon && break; sleep 0.05; done
  "$bin" vm create --image busybox --name cp >/dev/null 2>&1
  head -c 200M /dev/urandom > "$work/big"; sum=$(sha256sum < "$work/big" | cut -d' ' -f1)
  "$bin" vm ssh-config cp > "$work/ssh_config"
  check() { [ "$(sha256sum < "$1" | cut -d' ' -f1)" = "$sum" ] || { echo "sha256 mismatch: $1"; exit 1; }; }
  cu=(); cd=(); su=(); sd=()
  for _ in $(seq $runs); do
    t=$(date +%s%N); "$bin" vm cp "$work/big" cp:/root/big; cu+=($(ms_since $t))
    t=$(date +%s%N); "$bin" vm cp cp:/root/big "$work/back"; cd+=($(ms_since $t)); check "$work/back"; rm "$work/back"
    t=$(date +%s%N); scp -q -F "$work/ssh_config" "$work/big" cp:/root/big; su+=($(ms_since $t))
    t=$(date +%s%N); scp -q -F "$work/ssh_config" cp:/root/big "$work/back"; sd+=($(ms_since $t)); check "$work/back"; rm "$work/back"
  done
  mean() { local s=0; for v in "$@"; do s=$((s+v)); done; echo $((s/$#)); }
  rate() { awk "BEGIN{printf \"%.1f MiB/s\", 200000/$(mean "$@")}"; }
  echo "200 MiB, 1 vCPU TCG guest, $runs runs (ms):"
  echo "vm cp host->guest: ${cu[*]}  mean $(mean "${cu[@]}") ($(rate "${cu[@]}"))"
  echo "scp   host->guest: ${su[*]}  mean $(mean "${su[@]}") ($(rate "${su[@]}"))"
  echo "vm cp guest->host: ${cd[*]}  mean $(mean "${cd[@]}") ($(rate "${cd[@]}"))"
  echo "scp   guest->host: ${sd[*]}  mean $(mean "${sd[@]}") ($(rate "${sd[@]}"))"
}

# bench_initmodes: create -> ready of debian-bookworm-systemd with --init
# image (systemd is PID 1; ready = banger's agent answers and systemd
# answers on its private socket) against --init banger on the same image,
# alternating, plus how long systemd then takes to reach "running"
# (`systemctl is-system-running --wait`) and what the stop takes. Then
# the modules disk: busybox VMs on the kernel as pulled against a copy of
# it whose manifest keeps no module tree (so the start skips
# prepare_modules and the guest gets no modules disk), with banger-init's
# own "ready in" and "waited … for the modules disk" from the console.
# BENCH_STATE=DIR reuses a state dir that already has the kernel
# debian-cloud-amd64 and the images debian-bookworm-systemd and busybox
# (the run adds a kernel "bench-nomods" and removes only its own VMs);
# otherwise a fresh one is pulled (debootstrap: minutes).
bench_initmodes() {
  runs=${BOOT_RUNS:-3}
  ns=bbench$$
  st=${BENCH_STATE:-$work/state}
  rt=$work/run
  ip netns add $ns; ip netns exec $ns ip link set lo up
  trap 'for p in $(ip netns pids '$ns' 2>/dev/null); do kill -9 $p; done; sleep 0.3; ip netns del '$ns' 2>/dev/null; cleanup' EXIT
  export BANGER_SOCKET=$rt/banger.sock
  waitd() { for _ in $(seq 100); do "$bin" version 2>/dev/null | grep -q daemon && return; sleep 0.1; done; echo "daemon did not start"; exit 1; }
  if [ -z "${BENCH_STATE:-}" ]; then
    # Pull in the root namespace (touches no interface), boot in $ns.
    "$bin" daemon --state-dir "$st" --runtime-dir "$rt" 2>"$work/daemon0.log" & dpid=$!; waitd
    "$bin" kernel pull debian-cloud-amd64 >/dev/null
    "$bin" image pull debian-bookworm-systemd >/dev/null
    go build -o "$work/fixture" ./cmd/banger-fixture
    "$work/fixture" busybox-layout "$work/bb"
    "$bin" image import "$work/bb" --name busybox >/dev/null
    kill $dpid; wait $dpid 2>/dev/null || true
  fi
  # The no-modules-disk kernel: the same files (hard links), a manifest
  # without modules_tree/modules_disk.
  if ! sqlite3 "$st/banger.db" "select name from kernels" | grep -qx bench-nomods; then
    kd=$st/kernels/debian-cloud-amd64; nd=$st/kernels/bench-nomods
    rm -rf "$nd"; cp -al "$kd" "$nd"; rm -f "$nd/manifest.json"
    python3 - "$kd/manifest.json" "$nd/manifest.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
m["name"] = "bench-nomods"
for k in ("modules_tree", "modules_release", "modules_disk"):
    m.pop(k, None)
json.dump(m, open(sys.argv[2], "w"), indent=2)
PY
    sqlite3 "$st/banger.db" "INSERT INTO kernels (name, data, pulled_at) SELECT 'bench-nomods', replace(replace(data, '\"name\":\"debian-cloud-amd64\"', '\"name\":\"bench-nomods\"'), '/kernels/debian-cloud-amd64\"', '/kernels/bench-nomods\"'), pulled_at FROM kernels WHERE name = 'debian-cloud-amd64';"
  fi
  printf 'ready_timeout = "300s"\n' >"$work/config.toml"
  ip netns exec $ns "$bin" daemon --config "$work/config.toml" --state-dir "$st" --runtime-dir "$rt" --bridge-ip 10.251.0.1/24 2>"$work/daemon.log" & dpid=$!; waitd
  # VMs an interrupted earlier run left in a reused state.
  for v in $("$bin" vm ls -a -o json | python3 -c 'import json,sys; [print(v["name"]) for v in json.load(sys.stdin) or [] if v["name"][:2] in ("bi","bb","bm")]'); do
    "$bin" vm rm -f "$v" >/dev/null 2>&1
  done
  mean() { local s=0; for v in "$@"; do s=$((s+v)); done; echo $((s/$#)); }
  ci=(); ri=(); si=(); cb=(); sb=()
  for i in $(seq $runs); do
    t=$(date +%s%N); "$bin" vm create --name bi$i --image debian-bookworm-systemd --init image >/dev/null 2>&1 || echo "create bi$i failed"; ci+=($(ms_since $t))
    t=$(date +%s%N); st_i=$("$bin" vm exec bi$i -- timeout 900 systemctl is-system-running --wait 2>&1 || true); ri+=($(ms_since $t))
    [ "$st_i" = running ] || echo "bi$i: systemctl is-system-running said '$st_i'"
    t=$(date +%s%N); "$bin" vm stop bi$i >/dev/null 2>&1; si+=($(ms_since $t))
    "$bin" vm rm -f bi$i >/dev/null 2>&1
    t=$(date +%s%N); "$bin" vm create --name bb$i --image debian-bookworm-systemd --init banger >/dev/null 2>&1 || echo "create bb$i failed"; cb+=($(ms_since $t))
    t=$(date +%s%N); "$bin" vm stop bb$i >/dev/null 2>&1; sb+=($(ms_since $t))
    "$bin" vm rm -f bb$i >/dev/null 2>&1
  done
  echo "debian-bookworm-systemd, $runs runs each, TCG, 1 vCPU, 512 MiB (load average now: $(cut -d' ' -f1-3 /proc/loadavg)):"
  echo "  --init image  create -> ready (ms):              ${ci[*]}  mean $(mean "${ci[@]}")"
  echo "  --init image  then is-system-running --wait (ms): ${ri[*]}  mean $(mean "${ri[@]}")"
  echo "  --init image  vm stop (ms):                       ${si[*]}  mean $(mean "${si[@]}")"
  echo "  --init banger create -> ready (ms):              ${cb[*]}  mean $(mean "${cb[@]}")"
  echo "  --init banger vm stop (ms):                       ${sb[*]}  mean $(mean "${sb[@]}")"
  cm=(); cn=(); gm=(); gn=(); wm=(); mm=()
  for i in $(seq $runs); do
    for k in debian-cloud-amd64 bench-nomods; do
      t=$(date +%s%N); "$bin" vm create --name bm$i --image busybox --kernel $k >/dev/null 2>&1 || echo "create bm$i ($k) failed"; c=$(ms_since $t)
      log=$("$bin" vm logs bm$i 2>/dev/null)
      g=$(echo "$log" | sed -n 's/.*banger-init: ready in \([0-9.]*\)\(m\?s\).*/\1 \2/p' | awk '{print ($2=="s") ? int($1*1000) : int($1)}')
      if [ $k = debian-cloud-amd64 ]; then
        cm+=($c); gm+=(${g:-0})
        wm+=("$(echo "$log" | sed -n 's/.*waited \(.*\) for the modules disk.*/\1/p')")
        mm+=("$(echo "$log" | sed -n 's/.*modules disk .* mounted at .* in \(.*\)$/\1/p')")
      else
        cn+=($c); gn+=(${g:-0})
      fi
      "$bin" vm rm -f bm$i >/dev/null 2>&1
    done
  done
  echo "busybox, kernel with vs without its modules disk, $runs runs each:"
  echo "  with:    create -> ready (ms): ${cm[*]}  mean $(mean "${cm[@]}"); banger-init ready in (ms): ${gm[*]}  mean $(mean "${gm[@]}")"
  echo "  without: create -> ready (ms): ${cn[*]}  mean $(mean "${cn[@]}"); banger-init ready in (ms): ${gn[*]}  mean $(mean "${gn[@]}")"
  echo "  modules disk mount in the guest: ${mm[*]}; boot waited for it: ${wm[*]}"
}

# bench_shares: sequential write (dd 64 MiB, fsync) and read (after
# dropping the guest's page cache) inside a 1 vCPU guest, on a virtio-fs
# share, on the work disk (/root) and on a 9p share of the same host
# directory, in one run: the daemon is restarted with --share-transport 9p
# for the last. MiB/s, timed in the guest (/proc/uptime).
bench_shares() {
  runs=${SHARE_RUNS:-3}
  setup_ns
  # 9p is served by QEMU after it drops to banger-vmm: the directory (and
  # the path to it) must be reachable by that user.
  chmod 755 "$work"; mkdir -m 777 "$work/share"
  # The guest's busybox dd prints no rate: time each dd with the guest's
  # /proc/uptime (10 ms steps; a 64 MiB dd takes seconds under TCG).
  gdd() { # VM CMD: MiB/s of one 64 MiB dd, or the error
    local t
    t=$("$bin" vm exec "$1" -- "a=\$(cut -d' ' -f1 /proc/uptime); $2 2>/dev/null || exit 1; b=\$(cut -d' ' -f1 /proc/uptime); echo \$a \$b" 2>&1) || { echo "failed($t)"; return; }
    echo "$t" | awk '{printf "%.1f", 64/($2-$1)}'
  }
  measure() { # VM DIR LABEL
    local w=() r=()
    for _ in $(seq $runs); do
      w+=("$(gdd "$1" "dd if=/dev/zero of=$2/bench bs=1M count=64 conv=fsync")")
      "$bin" vm exec "$1" -- "sync; echo 3 > /proc/sys/vm/drop_caches" || true
      r+=("$(gdd "$1" "dd if=$2/bench of=/dev/null bs=1M")")
      "$bin" vm exec "$1" -- "rm -f $2/bench" || true
    done
    echo "$3: write ${w[*]}; read ${r[*]} (MiB/s)"
  }
  "$bin" vm create --image busybox --name shv -v "$work/share:/mnt/share" >/dev/null
  tr=$("$bin" vm inspect shv -o json | sed -n 's/.*"transport": "\(.*\)".*/\1/p' | head -1)
  echo "64 MiB sequential dd, 1 vCPU TCG guest, $runs runs each:"
  measure shv /mnt/share "share over $tr"
  measure shv /root "work disk (ext4 on virtio-blk)"
  "$bin" vm rm -f shv >/dev/null
  kill $dpid; wait $dpid 2>/dev/null || true
  ip netns exec $ns "$bin" daemon --state-dir "$work/state" --runtime-dir "$work/run" --share-transport 9p 2>"$work/daemon9p.log" & dpid=$!
  for _ in $(seq 100); do "$bin" version 2>/dev/null | grep -q daemon && break; sleep 0.05; done
  # Debian's cloud kernel has no 9p: the daemon refuses such a VM.
  if ! "$bin" vm create --image busybox --name sh9 -v "$work/share:/mnt/share" >/dev/null 2>"$work/sh9.err"; then
    echo "share over 9p: $(grep -i 9p "$work/sh9.err" | tail -1)"
    return
  fi
  tr=$("$bin" vm inspect sh9 -o json | sed -n 's/.*"transport": "\(.*\)".*/\1/p' | head -1)
  measure sh9 /mnt/share "share over $tr (msize 512 KiB)"
}

# bench_kernel: the kernel banger builds (microvm-6.1, booted
# Firecracker-style: acpi=off, devices on the command line) against
# Debian's cloud kernel (acpi=on), alternating, same run:
#  1. bare QEMU (the driver's machine flags, 1 vCPU, 256 MiB, TCG) from
#     start to a busybox /init in an initramfs that reboots at once (QEMU
#     runs with -no-reboot, so it exits; a power-off needs ACPI, which the
#     built kernel has not): kernel boot to init, plus QEMU's start and exit;
#  2. `vm create` -> agent ready of the busybox image with each kernel.
# The built kernel comes from the build cache (a cold cache builds it).
bench_kernel() {
  runs=${KERNEL_RUNS:-5}
  EXTRA_KERNELS=microvm-6.1 setup_ns
  # The daemon in $ns uses the same build cache (nothing to build now).
  kill $dpid; wait $dpid 2>/dev/null || true
  ip netns exec $ns "$bin" daemon --state-dir "$work/state" --runtime-dir "$work/run" --kernel-build-cache "$kcache" 2>"$work/daemon.log" & dpid=$!
  for _ in $(seq 100); do "$bin" version 2>/dev/null | grep -q daemon && break; sleep 0.05; done
  mean() { local s=0; for v in "$@"; do s=$((s+v)); done; echo $((s/$#)); }
  ird=$work/ird; mkdir -p $ird/bin $ird/dev
  cp /bin/busybox $ird/bin/busybox
  printf '#!/bin/busybox sh\n/bin/busybox echo BENCH-INIT\n/bin/busybox reboot -f\n' >$ird/init; chmod +x $ird/init
  (cd $ird && find . | cpio -o -H newc 2>/dev/null | gzip -1) >$work/init.img
  khz=$(awk '/cpu MHz/{printf "%d", $4*1000; exit}' /proc/cpuinfo)
  bare() { # kernel acpi
    local log=$work/bare.log t
    rm -f $log
    t=$(date +%s%N)
    timeout 120 qemu-system-x86_64 -M microvm,accel=tcg,acpi=$2,x-option-roms=off,isa-serial=on,rtc=on,pit=on,pic=on \
      -cpu max -m 256 -smp 1 -nodefaults -no-user-config -nographic -no-reboot -serial file:$log \
      -kernel "$1" -initrd $work/init.img \
      -append "console=ttyS0 reboot=t panic=-1 quiet tsc=reliable tsc_early_khz=$khz" >/dev/null 2>&1
    local ms=$(ms_since $t)
    grep -q BENCH-INIT $log || { echo "bare boot of $1 did not reach init" >&2; tail -5 $log >&2; }
    echo $ms
  }
  kd=$work/state/kernels
  bc=(); bm=(); cc=(); cm=(); xc=(); xm=()
  for i in $(seq $runs); do
    bc+=($(bare $kd/debian-cloud-amd64/vmlinuz on))
    bm+=($(bare $kd/microvm-6.1/vmlinuz off))
    # The same kernels as ELF vmlinux (PVH entry, no decompression: how
    # Firecracker loads a kernel).
    xc+=($(bare $kd/debian-cloud-amd64/vmlinux on))
    xm+=($(bare $kd/microvm-6.1/vmlinux off))
    for k in debian-cloud-amd64 microvm-6.1; do
      t=$(date +%s%N); "$bin" vm create --name bk$i --image busybox --kernel $k >/dev/null 2>&1 || echo "create bk$i ($k) failed"; c=$(ms_since $t)
      [ $k = debian-cloud-amd64 ] && cc+=($c) || cm+=($c)
      "$bin" vm rm -f bk$i >/dev/null 2>&1
    done
  done
  echo "bare qemu -> busybox init -> reboot (QEMU exits), $runs runs each (ms):"
  echo "  debian-cloud-amd64 (acpi=on):  ${bc[*]}  mean $(mean "${bc[@]}")"
  echo "  microvm-6.1 (acpi=off):        ${bm[*]}  mean $(mean "${bm[@]}")"
  echo "  ratio built/cloud: $(awk "BEGIN{printf \"%.2f\", $(mean "${bm[@]}")/$(mean "${bc[@]}")}")"
  echo "  debian-cloud-amd64 vmlinux:    ${xc[*]}  mean $(mean "${xc[@]}")"
  echo "  microvm-6.1 vmlinux:           ${xm[*]}  mean $(mean "${xm[@]}")"
  echo "  ratio built/cloud, vmlinux: $(awk "BEGIN{printf \"%.2f\", $(mean "${xm[@]}")/$(mean "${xc[@]}")}"); microvm vmlinux / cloud bzImage: $(awk "BEGIN{printf \"%.2f\", $(mean "${xm[@]}")/$(mean "${bc[@]}")}")"
  echo "vm create -> ready, busybox image (ms):"
  echo "  debian-cloud-amd64: ${cc[*]}  mean $(mean "${cc[@]}")"
  echo "  microvm-6.1:        ${cm[*]}  mean $(mean "${cm[@]}")"
  echo "  ratio built/cloud: $(awk "BEGIN{printf \"%.2f\", $(mean "${cm[@]}")/$(mean "${cc[@]}")}")"
}

# Pods on two banger nodes against a real control plane: the smoke scenario
# k8s_two_nodes prints "pod create -> Running" beside "banger vm create ->
# ready" on the same host in the same run, and with K8S_BENCH_PODS=N (20
# here) the time for N pods spread over both nodes to be Running.
bench_k8s() {
  make -s build kubelet
  go build -trimpath -o bin/banger-fixture ./cmd/banger-fixture
  K8S_BENCH_PODS=${K8S_BENCH_PODS:-20} ./smoke/run.sh k8s_two_nodes | grep -E 'figure|PASS|FAIL|passed'
}

case "$which" in
  shares) bench_shares ;;
  pull) bench_pull ;;
  cp) bench_cp ;;
  boot) bench_boot ;;
  hostcost) bench_hostcost ;;
  density) bench_density ;;
  snap) bench_snap ;;
  initmodes) bench_initmodes ;;
  kernel) bench_kernel ;;
  k8s) bench_k8s ;;
  vmls|all) bench_vmls ;;
  *) echo "unknown benchmark $which"; exit 2 ;;
esac
