#!/usr/bin/env bash
# Fuzz campaigns quoted in BENCHMARKS.md: every target, one after another,
# each with one worker (-parallel=1), FUZZTIME executions or time each.
# A benchmark-like run, not CI: `go test ./...` runs the seed corpora only.
# Usage: [FUZZTIME=1000000x] [FUZZ_ONLY=regexp] scripts/fuzz.sh
# New interesting inputs go to the Go build cache's fuzz corpus; a crasher
# is written to the package's testdata/fuzz/<target>/ (commit it, fix it).
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
fuzztime=${FUZZTIME:-1000000x}
only=${FUZZ_ONLY:-.}
targets=(
  "./internal/model FuzzParseSize"
  "./internal/model FuzzValidateVMName"
  "./internal/daemon FuzzReadLine"
  "./internal/daemon FuzzDecodeParams"
  "./internal/daemon FuzzParsePorts"
  "./internal/guestproto FuzzParseCmdline"
  "./internal/guestproto FuzzDecodeTime"
  "./internal/guestproto FuzzParseExitRecord"
  "./internal/guestproto FuzzDecodeSetup"
  "./internal/guestproto FuzzDecodeSetupReply"
  "./internal/agent FuzzAwaitLine"
  "./cmd/banger-init FuzzAgentHandshake"
  "./internal/kernelcat FuzzParse"
  "./internal/imagecat FuzzParse"
  # Each execution is a small filesystem tree: minimizing a new input
  # (default 60 s of unreported executions) would take most of the run.
  "./internal/imagebuild FuzzApplyLayer -fuzzminimizetime=10x"
)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
failed=()
printf '%-42s %10s %8s %9s %6s  %s\n' target execs fuzz_s execs/s new wall_s
for t in "${targets[@]}"; do
  read -r pkg name extra <<<"$t"
  [[ "$pkg $name" =~ $only ]] || continue
  start=$(date +%s%N)
  if ! "$GO" test -run '^$' -fuzz "^$name\$" -fuzztime "$fuzztime" -parallel=1 -timeout 0 ${extra:-} -v "$pkg" >"$log" 2>&1; then
    cat "$log"
    failed+=("$pkg $name")
    continue
  fi
  wall=$(( ($(date +%s%N) - start) / 1000000 ))
  # The last progress line has the totals; "--- PASS: FuzzX (N s)" the
  # fuzzing time without the build.
  last=$(grep '^fuzz: elapsed:' "$log" | tail -1)
  execs=$(sed -n 's/.*execs: \([0-9]*\).*/\1/p' <<<"$last")
  new=$(sed -n 's/.*new interesting: \([0-9]*\).*/\1/p' <<<"$last")
  secs=$(sed -n "s/^--- PASS: $name (\([0-9.]*\)s)/\1/p" "$log")
  rate=$(awk "BEGIN{printf \"%d\", $execs/$secs}")
  printf '%-42s %10s %8s %9s %6s  %s\n' "${pkg#./} $name" "$execs" "$secs" "$rate" "$new" "$(awk "BEGIN{printf \"%.1f\", $wall/1000}")"
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed: ${failed[*]}"
  exit 1
fi
