# image pull from a registry (the loopback registry in the daemon's
# namespace): the image is listed, boots, and has the pushed content.
CLASS=pure
COST=15

run() {
	local tag repo ref img n
	tag=t$RANDOM$RANDOM
	repo=smoke/pull-$tag
	ref=127.0.0.1:5000/$repo:v1
	img=$(uniq_name pulled)
	step "push busybox (tag $tag) to $ref"
	ip netns exec "$NS_D" "$FIXTURE" push -tag "$tag" "$ref"
	step "image pull $ref --name $img"
	bg image pull "$ref" --name "$img"
	assert_contains "$(bg image ls)" "$img" "image ls"
	n=$(uniq_name pullvm)
	track "$n"
	assert_contains "$(bg vm run --rm --name "$n" --image "$img" -- cat /etc/banger-fixture)" "$tag" "fixture marker in the guest"
	step "pulling again is refused, saying what to do"
	must_fail bg image pull "$ref" --name "$img"
	assert_contains "$OUT" "image rm $img" "error for pulling a pulled image"
	assert_eq 1 "$(bg image ls | grep -c "^$img ")" "images named $img"
	must_fail bg image pull "127.0.0.1:5000/smoke/none-$tag:v1"
	assert_contains "$OUT" "none-$tag" "error for a missing repo"
	bg image rm "$img"
	assert_not_contains "$(bg image ls)" "$img " "image ls after rm"
}
