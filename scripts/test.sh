#!/usr/bin/env bash
# The test command: installs prerequisites, then runs the whole suite — unit,
# integration and VM tests (make test), then the end-to-end smoke suite with
# two workers (make smoke JOBS=2). Needs root (VM boots, network
# namespaces). Used verbatim by .ci/run.
set -euo pipefail
[ "$(id -u)" -eq 0 ] || exec sudo -E "$0" "$@"
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
make test
make smoke JOBS=2
