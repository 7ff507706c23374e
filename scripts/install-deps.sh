#!/usr/bin/env bash
# Installs what banger needs on a Debian/Ubuntu host (as root): apt packages,
# and Go when the host has none as new as go.mod's (scripts/go-toolchain.sh:
# Go's toolchain module from the host's Go module proxy, checksum-verified).
# gcc and libc6-dev are for the race-detector tests (cgo); systemd for
# systemd-analyze, which checks banger.service (a host without systemd as
# PID 1, such as a container, still gets the tool).
set -euo pipefail
[ "$(id -u)" -eq 0 ] || exec sudo -E "$0" "$@"
pkgs=(qemu-system-x86 e2fsprogs kmod rsync busybox-static cpio debootstrap socat iproute2 nftables dnsutils openssh-client curl sqlite3 bc ca-certificates make git unzip gcc libc6-dev systemd)
# Building the microvm-6.1 kernel (a debsrc catalog entry: banger kernel pull
# microvm-6.1) from Debian's linux-source package.
pkgs+=(build-essential flex bison libelf-dev libssl-dev xz-utils perl)
# The Kubernetes tests (smoke k8s_two_nodes): Debian's etcd under the control
# plane scripts/k8s-cluster.sh runs; openssl makes its PKI.
pkgs+=(etcd-server openssl python3)
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
# Go: found, or installed to /usr/local/lib/banger-go (the Makefile finds it).
"$(dirname "$0")"/go-toolchain.sh >/dev/null
