# image import of an OCI layout: listed, boots; bad input is refused; an
# image in use cannot be removed.
CLASS=pure
COST=15

run() {
	local img n
	img=$(uniq_name imported)
	step "image import $FIX_LAYOUT --name $img"
	bg image import "$FIX_LAYOUT" --name "$img"
	assert_contains "$(bg image ls)" "$img" "image ls"
	must_fail bg image import "$FIX_LAYOUT" --name "$img"
	assert_contains "$OUT" "$img" "error for a taken image name"
	must_fail bg image import "$WORK/no-such-layout" --name "$(uniq_name imp)"
	assert_contains "$OUT" "no-such-layout" "error for a missing path"
	n=$(uniq_name impvm)
	vm_create "$n" --image "$img"
	assert_contains "$(x "$n" cat /etc/banger-fixture)" "v1" "fixture marker in the guest"
	step "image rm of an image in use"
	must_fail bg image rm "$img"
	assert_contains "$OUT" "$n" "error names the VM using it"
	bg vm rm -f "$n"
	bg image rm "$img"
	assert_not_contains "$(bg image ls)" "$img " "image ls after rm"
}
