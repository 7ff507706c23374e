#!/usr/bin/env bash
# Builds a real Kubernetes control plane for the kubelet tests:
# kube-apiserver, kube-scheduler, kube-controller-manager and kubectl from
# the Go module proxy, cached by version. Prints the bin directory.
#
# k8s.io/kubernetes replaces its k8s.io/* staging modules with local paths,
# so `go install k8s.io/kubernetes/cmd/...@v` is refused; a wrapper module
# requires it and repeats those replaces as the published v0.X.Y modules.
#
# Usage: scripts/k8s-build.sh [VERSION]   (default 1.37.2)
# Env:   BANGER_K8S_CACHE (default /var/cache/banger-k8s)
set -euo pipefail
ver="${1:-1.37.2}"
cache="${BANGER_K8S_CACHE:-/var/cache/banger-k8s}"
bins=(kube-apiserver kube-scheduler kube-controller-manager kubectl)
out="$cache/v$ver/bin"

have_all() {
	for b in "${bins[@]}"; do [ -x "$out/$b" ] || return 1; done
}
if have_all; then
	echo "$out"
	exit 0
fi

export PATH="$PATH:/usr/local/go/bin:/usr/local/lib/banger-go/bin"
command -v go >/dev/null || { echo "k8s-build: no go on PATH (run scripts/install-deps.sh)" >&2; exit 1; }
minor="${ver#*.}"  # 37.2
staging="v0.$minor"

work="$(mktemp -d "${TMPDIR:-/tmp}/banger-k8s-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cd "$work"
export GOFLAGS=-mod=mod GOWORK=off
cat >go.mod <<EOF
module banger-k8s-wrapper

go 1.26

require k8s.io/kubernetes v$ver
EOF
# The staging modules the release's own go.mod replaces.
modfile="$(go mod download -json "k8s.io/kubernetes@v$ver" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
[ -f "$modfile" ] || { echo "k8s-build: cannot read k8s.io/kubernetes@v$ver's go.mod" >&2; exit 1; }
echo "replace (" >>go.mod
sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\t\1 => \1 '"$staging"'#p' "$modfile" >>go.mod
echo ")" >>go.mod
cat >tools.go <<'EOF'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
EOF
echo "k8s-build: resolving modules for v$ver" >&2
go mod tidy -e >/dev/null 2>&1 || true
ld="-s -w -X k8s.io/component-base/version.gitVersion=v$ver -X k8s.io/client-go/pkg/version.gitVersion=v$ver"
mkdir -p "$out.tmp"
for b in "${bins[@]}"; do
	start=$(date +%s)
	echo "k8s-build: building $b v$ver (the first build takes ~12 min on 2 cores)" >&2
	go build -trimpath -ldflags "$ld" -o "$out.tmp/$b" "k8s.io/kubernetes/cmd/$b"
	echo "k8s-build: $b built in $(( $(date +%s) - start ))s" >&2
done
rm -rf "$out"
mv "$out.tmp" "$out"
echo "$out"
