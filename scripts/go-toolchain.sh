#!/usr/bin/env bash
# Prints the bin directory of a Go new enough for go.mod, installing one
# first when the host has none (a fresh Debian 12 ships Go 1.19, Ubuntu
# 24.04 Go 1.22; banger needs the go.mod version).
#
#   scripts/go-toolchain.sh          find, else install (as root), then print
#   scripts/go-toolchain.sh --find   find only: print, or exit 1 quietly
#
# Looked for, in order: `go` on PATH, /usr/local/go/bin/go, and what this
# script installed before ($GO_HOME/go<version>). A Go counts when its
# version is at least go.mod's `toolchain` (else `go`) line.
#
# The install is what GOTOOLCHAIN=auto does: Go's own toolchain module,
# golang.org/toolchain@v0.0.1-go<version>.linux-<arch>, fetched from the Go
# module proxy the host is configured for (GOPROXY; see proxy_list) and
# checked against the module's h1: hash as the Go checksum database records
# it (pinned below, so the check needs nothing online), then unpacked to
# $GO_HOME/go<version>. The zip is kept in $GO_CACHE, keyed by version, so
# a reinstall does not download it again (it is verified again).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GO_HOME=${BANGER_GO_HOME:-/usr/local/lib/banger-go}
GO_CACHE=${BANGER_GO_CACHE:-/var/cache/banger/go}

# h1: hashes of golang.org/toolchain module zips, from the checksum
# database (`go mod download -json golang.org/toolchain@v0.0.1-go1.26.8.linux-amd64`
# prints the same "Sum"). Bumping go.mod's Go version means adding its line
# here; TestToolchainPinned fails until then.
declare -A PINNED=(
	[go1.26.8.linux-amd64]=h1:ZOmGe1OnfREDMIdb1Qi4G9JSuDPBLGExZMQ4nis1RXM=
)

log() { echo "go-toolchain: $*" >&2; }
die() { log "$*"; exit 1; }

# want_version: go.mod's toolchain line (go1.X.Y) or go line (1.X.Y), as 1.X.Y.
want_version() {
	local v
	v=$(awk '$1 == "toolchain" { sub(/^go/, "", $2); print $2; exit }' "$ROOT/go.mod")
	[[ -n $v ]] || v=$(awk '$1 == "go" { print $2; exit }' "$ROOT/go.mod")
	[[ -n $v ]] || die "no go line in $ROOT/go.mod"
	echo "$v"
}

# version_ge A B: A >= B for Go versions (1.26.8, 1.19, 1.22rc1).
version_ge() { [[ $(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1) == "$2" ]]; }

# go_version BIN: BIN's version as 1.X.Y, asked outside any module so a Go
# that knows GOTOOLCHAIN does not go and switch to go.mod's version.
go_version() {
	local v
	v=$(cd / && GOTOOLCHAIN=local "$1" env GOVERSION 2>/dev/null) || return 1
	echo "${v#go}"
}

# find_go WANT: prints the bin dir of the first Go >= WANT.
find_go() {
	local want=$1 g v
	for g in "$(command -v go || true)" /usr/local/go/bin/go "$GO_HOME/go$want/bin/go"; do
		[[ -n $g && -x $g ]] || continue
		v=$(go_version "$g") || continue
		if version_ge "$v" "$want"; then
			dirname "$(readlink -f "$g")"
			return 0
		fi
		log "$g is Go $v, older than go.mod's $want"
	done
	return 1
}

# goenv_line FILE: the GOPROXY value set in FILE (go env file syntax, or
# /etc/environment's KEY=VALUE with optional quotes).
goenv_line() {
	[[ -r $1 ]] || return 1
	local v
	v=$(sed -n 's/^[[:space:]]*\(export[[:space:]]\+\)\?GOPROXY=//p' "$1" | tail -n1)
	v=${v%\"}; v=${v#\"}; v=${v%\'}; v=${v#\'}
	[[ -n $v ]] && echo "$v"
}

# proxy_list: the GOPROXY the host is configured for, as Go would use it:
# the environment, the user's go env file, /etc/environment, then what an
# installed (too old) Go reports, then the default of the distribution's
# own Go package (read from its .deb, not installed). Nothing here names a
# proxy: with none of these, it stops and asks for GOPROXY.
proxy_list() {
	if [[ -n ${GOPROXY:-} ]]; then echo "$GOPROXY"; return; fi
	goenv_line "${GOENV:-${XDG_CONFIG_HOME:-$HOME/.config}/go/env}" && return
	goenv_line /etc/environment && return
	local g
	for g in "$(command -v go || true)" /usr/local/go/bin/go /usr/lib/go/bin/go; do
		[[ -n $g && -x $g ]] || continue
		(cd / && GOTOOLCHAIN=local "$g" env GOPROXY 2>/dev/null) | grep . && return
	done
	distro_go_proxy && return
	die "no Go module proxy configured: set GOPROXY (see 'go help goproxy') and run again"
}

# distro_go_proxy: GOPROXY's default in the distribution's Go package.
distro_go_proxy() {
	command -v apt-get >/dev/null || return 1
	local pkg tmp v
	pkg=$(apt-cache depends golang-go 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^golang-[0-9.]+-go$/ { print $2; exit }')
	[[ -n $pkg ]] || return 1
	tmp=$(mktemp -d)
	log "reading the default GOPROXY from the distribution's $pkg (downloaded, not installed)"
	if (cd "$tmp" && apt-get download -qq "$pkg" >/dev/null 2>&1) && dpkg-deb -x "$tmp"/*.deb "$tmp/x"; then
		for g in "$tmp"/x/usr/lib/go-*/bin/go; do
			# Its GOROOT is built in (/usr/lib/go-1.NN): point it here.
			v=$(cd / && env -u GOPROXY GOENV=off GOTOOLCHAIN=local GOROOT="${g%/bin/go}" "$g" env GOPROXY 2>/dev/null) && break
		done
	fi
	rm -rf "$tmp"
	[[ -n ${v:-} ]] && echo "$v"
}

# h1 DIR: the checksum database's hash (golang.org/x/mod/sumdb/dirhash
# Hash1) of the files under DIR: sha256 of the sorted "<sha256>  <name>"
# lines, base64.
h1() {
	local sum
	sum=$(cd "$1" && find . -type f -printf '%P\n' | LC_ALL=C sort | tr '\n' '\0' |
		xargs -0 -r sha256sum | sha256sum | cut -c1-64)
	printf '%b' "$(sed 's/../\\x&/g' <<<"$sum")" | base64 | sed 's/^/h1:/'
}

# fetch MOD ZIP: downloads MOD's zip to ZIP from the first GOPROXY entry
# that has it ("direct" cannot serve a toolchain; "off" stops).
fetch() {
	local mod=$1 zip=$2 list p
	list=$(proxy_list)
	local IFS=',|'
	for p in $list; do
		case $p in
		off) break ;;
		direct | "") continue ;;
		esac
		p=${p%/}
		[[ $p == *://* ]] || p=https://$p
		log "downloading $mod from $p"
		if curl -fsSL --netrc-optional --retry 2 -o "$zip.part" "$p/golang.org/toolchain/@v/${mod#golang.org/toolchain@}.zip"; then
			mv "$zip.part" "$zip"
			return 0
		fi
		log "$p: no $mod there"
	done
	rm -f "$zip.part"
	die "could not download $mod from GOPROXY=$list; check the proxy, or install Go $want yourself and put it on PATH"
}

# install_go WANT: installs Go WANT to $GO_HOME/goWANT.
install_go() {
	local want=$1 arch
	case $(uname -m) in
	x86_64) arch=amd64 ;;
	aarch64) arch=arm64 ;;
	*) die "no Go toolchain for $(uname -m) here: install Go $want yourself and put it on PATH" ;;
	esac
	local key=go$want.linux-$arch
	local mod=golang.org/toolchain@v0.0.1-$key
	local pin=${PINNED[$key]:-}
	[[ -n $pin ]] || die "no pinned checksum for $mod: add its h1: (go mod download -json $mod) to PINNED in $0"
	local dest=$GO_HOME/go$want zip=$GO_CACHE/$key.zip
	mkdir -p "$GO_HOME" "$GO_CACHE"
	tmp=$(mktemp -d "$GO_HOME/.install.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	local try
	for try in cached fresh; do
		[[ $try == cached && -s $zip ]] || fetch "$mod" "$zip"
		rm -rf "${tmp:?}"/*
		# Every entry must sit under the module's directory (no ../, no
		# absolute paths) before anything is unpacked.
		local names
		if ! names=$(unzip -Z1 "$zip" 2>/dev/null); then
			log "$zip is not a zip file"
		elif grep -qv "^$mod/" <<<"$names" || grep -q '\.\./' <<<"$names"; then
			log "$zip holds files outside $mod/"
		elif ! unzip -q "$zip" -d "$tmp" 2>/dev/null; then
			log "$zip does not unpack"
		else
			local got
			got=$(h1 "$tmp")
			[[ $got == "$pin" ]] && break
			log "$zip: checksum $got, want $pin (the checksum database's)"
		fi
		rm -f "$zip"
		[[ $try == fresh ]] && die "$mod failed verification; nothing installed"
	done
	# Module zips may carry no modes: make the commands executable, as the
	# go command does for a toolchain it downloads.
	chmod -R a+rX "$tmp/$mod"
	find "$tmp/$mod/bin" "$tmp/$mod/pkg/tool" -type f -exec chmod a+x {} +
	rm -rf "$dest"
	mv "$tmp/$mod" "$dest"
	log "installed Go $want ($mod, $pin) to $dest"
}

main() {
	want=$(want_version)
	if dir=$(find_go "$want"); then
		echo "$dir"
		return 0
	fi
	[[ ${1:-} == --find ]] && return 1
	[[ $(id -u) -eq 0 ]] || exec sudo -E "$0" "$@"
	command -v curl >/dev/null && command -v unzip >/dev/null ||
		die "needs curl and unzip (apt-get install curl unzip)"
	install_go "$want"
	echo "$GO_HOME/go$want/bin"
}

# Sourced (the tests do), it only defines the functions.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; fi
