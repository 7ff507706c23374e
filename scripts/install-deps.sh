#!/usr/bin/env bash
# Installs what banger needs on a Debian/Ubuntu host (as root). Go comes from
# the host (/usr/local/go or golang-go); everything else from apt.
set -euo pipefail
[ "$(id -u)" -eq 0 ] || exec sudo -E "$0" "$@"
pkgs=(qemu-system-x86 e2fsprogs kmod rsync busybox-static cpio debootstrap socat iproute2 nftables dnsutils openssh-client curl sqlite3 bc ca-certificates make git)
# Building the microvm-6.1 kernel (a debsrc catalog entry: banger kernel pull
# microvm-6.1) from Debian's linux-source package.
pkgs+=(build-essential flex bison libelf-dev libssl-dev xz-utils perl)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
export DEBIAN_FRONTEND=noninteractive
# The default kernel is fetched with `apt-get download`, which needs package
# lists even when every tool is already installed.
if ((${#missing[@]})) || ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then
  apt-get update -qq
fi
if ((${#missing[@]})); then
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# QEMU drops root to this system user once its devices are open.
if ! id banger-vmm >/dev/null 2>&1; then
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin banger-vmm
fi
if ! command -v go >/dev/null; then
  if [ -x /usr/local/go/bin/go ]; then export PATH=$PATH:/usr/local/go/bin
  else apt-get install -y -qq golang-go; fi
fi
