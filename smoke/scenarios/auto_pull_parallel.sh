# Four parallel creates of a not-yet-pulled registry image pull it once:
# the registry sees as many manifest GETs as one pull makes (measured first
# on another fresh repo), and all four VMs boot.
CLASS=pure
COST=35

run() {
	local tag base ref one i pids=() names=() rc=0 got
	tag=t$RANDOM$RANDOM
	base=smoke/apbase-$tag
	ip netns exec "$NS_D" "$FIXTURE" push -tag "$tag" "127.0.0.1:5000/$base:v1"
	assert_eq 0 "$(registry_count "$base")" "manifest GETs before any pull"
	step "one pull of $base"
	bg image pull "127.0.0.1:5000/$base:v1" --name "$(uniq_name apb)" >/dev/null
	one=$(registry_count "$base")
	((one >= 1)) || fail "a pull made $one manifest GETs"
	step "a single pull makes $one manifest GET(s)"
	ref=127.0.0.1:5000/smoke/ap-$tag:v1
	ip netns exec "$NS_D" "$FIXTURE" push -tag "$tag" "$ref"
	for i in 1 2 3 4; do
		names+=("$(uniq_name ap$i)")
		track "${names[-1]}"
		bg vm create --name "${names[-1]}" --image "$ref" >"$WORK/out/${names[-1]}.create" 2>&1 &
		pids+=($!)
	done
	step "4 parallel creates of $ref"
	for i in 0 1 2 3; do
		wait "${pids[$i]}" || { rc=1; echo "create ${names[$i]} failed:"; cat "$WORK/out/${names[$i]}.create"; }
	done
	((rc == 0)) || fail "a parallel create failed"
	got=$(registry_count "smoke/ap-$tag")
	assert_eq "$one" "$got" "manifest GETs for 4 parallel creates"
	assert_eq 1 "$(bg image ls | grep -c "$ref")" "images for $ref"
	for i in 0 1 2 3; do
		assert_contains "$(x "${names[$i]}" cat /etc/banger-fixture)" "$tag" "marker in ${names[$i]}"
	done
}
