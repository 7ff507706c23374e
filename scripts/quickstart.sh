#!/usr/bin/env bash
# The README's first command: install prerequisites, build and install
# banger, start the daemon if it is not running, then boot a VM from the
# default image and kernel and run a command in it.
set -euo pipefail
[ "$(id -u)" -eq 0 ] || exec sudo -E "$0" "$@"
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
make build
install -D -m 0755 bin/banger /usr/local/bin/banger
install -D -m 0755 bin/banger-init /usr/local/lib/banger/banger-init
if ! banger version 2>/dev/null | grep -q '^daemon'; then
  echo "==> starting banger daemon (log: /var/log/banger.log)"
  nohup banger daemon >>/var/log/banger.log 2>&1 &
  for _ in $(seq 100); do banger version 2>/dev/null | grep -q '^daemon' && break; sleep 0.1; done
fi
# The first run pulls the default kernel (apt) and builds the default image
# (debootstrap); later runs start in seconds.
banger vm run --rm -- uname -a
