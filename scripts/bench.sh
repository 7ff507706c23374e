#!/usr/bin/env bash
# Benchmarks quoted in BENCHMARKS.md. Each prints the figure it measures.
# Usage: scripts/bench.sh [vmls]
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

case "$which" in
  vmls|all) bench_vmls ;;
  *) echo "unknown benchmark $which"; exit 2 ;;
esac
