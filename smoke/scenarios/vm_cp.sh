# vm cp both ways: a file and a tree with a symlink, modes kept with -a,
# sha256 equal; a source that does not exist writes nothing.
CLASS=pure
COST=20

run() {
	local n src back
	n=$(uniq_name cp)
	src=$(mktemp -d "$WORK/out/cp.XXXXXX")
	mkdir -p "$src/tree/sub"
	head -c 3M /dev/urandom >"$src/tree/big"
	echo small >"$src/tree/sub/small"
	chmod 751 "$src/tree/sub"
	chmod 600 "$src/tree/sub/small"
	ln -s sub/small "$src/tree/link"
	vm_create "$n" --image busybox
	bg vm cp -a -r "$src/tree" "$n:/root/tree"
	assert_eq "$(sha256sum <"$src/tree/big" | cut -d' ' -f1)" "$(x "$n" sha256sum /root/tree/big | cut -d' ' -f1)" "big in the guest"
	assert_eq "751 600 sub/small" "$(x "$n" sh -c 'echo $(stat -c %a /root/tree/sub) $(stat -c %a /root/tree/sub/small) $(readlink /root/tree/link)')" "modes and symlink in the guest"
	back=$(mktemp -d "$WORK/out/cpback.XXXXXX")
	bg vm cp -a -r "$n:/root/tree" "$back/tree"
	assert_eq "$(cd "$src/tree" && find . -type f | sort | xargs sha256sum)" "$(cd "$back/tree" && find . -type f | sort | xargs sha256sum)" "tree back on the host"
	assert_eq "751 sub/small" "$(stat -c %a "$back/tree/sub") $(readlink "$back/tree/link")" "modes and symlink back"
	step "a missing source writes nothing"
	must_fail bg vm cp "$src/nope" "$n:/root/nope"
	must_fail x "$n" test -e /root/nope
}
