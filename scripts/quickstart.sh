#!/usr/bin/env bash
# The README's first command: install prerequisites, build and install
# banger (as a systemd service where systemd runs), start the daemon if it
# is not running, then boot a VM from the default image and kernel and run
# a command in it.
set -euo pipefail
[ "$(id -u)" -eq 0 ] || exec sudo -E "$0" "$@"
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
make build
# Binaries to /usr/local, the banger group, banger.service: enabled and
# started where systemd runs. Where it does not, the unit is only installed
# and the daemon is started here by hand.
bin/banger system install
if ! banger version 2>/dev/null | grep -q '^daemon'; then
  if [ ! -d /run/systemd/system ]; then
    echo "==> starting banger daemon by hand (log: /var/log/banger.log)"
    nohup banger daemon >>/var/log/banger.log 2>&1 &
  fi
  for _ in $(seq 300); do banger version 2>/dev/null | grep -q '^daemon' && break; sleep 0.1; done
  banger version | grep -q '^daemon' || {
    echo "banger daemon did not come up: see journalctl -u banger or /var/log/banger.log" >&2
    exit 1
  }
fi
# The first run pulls the default kernel (apt) and builds the default image
# (debootstrap); later runs start in seconds.
banger vm run --rm -- uname -a
