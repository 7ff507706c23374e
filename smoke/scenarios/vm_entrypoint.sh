# An app image whose Entrypoint is busybox httpd (banger-fixture
# app-layout, imported under a name of this scenario's own) serves through
# -p right after `vm create`, with no exec; `vm logs` has its output; its
# Env reaches `vm exec`; killing the server stops the VM with --restart no
# (exit code in inspect) and restarts the server with --restart always.
CLASS=pure
COST=60

get() { ip netns exec "$NS_D" curl -fsS --max-time 5 "http://127.0.0.1:$1/"; }
is_stopped() { [[ $(vm_state "$1") == stopped ]]; }
new_httpd() { # NAME OLDPID: an httpd runs in NAME and it is not OLDPID
	local p
	p=$(x "$1" pidof httpd) && [[ -n $p && $p != "$2" ]]
}

run() {
	local img a b pa pb pid out
	img=$(uniq_name web)
	a=$(uniq_name ena)
	b=$(uniq_name enb)
	pa=$((20000 + RANDOM % 20000))
	pb=$((pa + 1))
	FAIL_HOOK="bg image rm $img"
	"$FIXTURE" app-layout -tag "$img" \
		-entrypoint '["/bin/sh", "-c", "echo app-starting $APPVAR; exec httpd -f -v -p 80 -h /www", "app"]' \
		-env APPVAR=fromimage -file "www/index.html=page-$img" "$WORK/out/$img"
	bg image import "$WORK/out/$img" --name "$img"
	rm -rf "$WORK/out/$img"

	vm_create "$a" --image "$img" -p "127.0.0.1:$pa:80"
	step "the entrypoint serves through -p (no exec)"
	wait_for 30 get "$pa"
	assert_eq "page-$img" "$(get "$pa")" "page through the forward"
	out=$(bg vm logs "$a")
	assert_contains "$out" "app-starting fromimage" "vm logs (the entrypoint's output)"
	assert_contains "$(x "$a" env)" "APPVAR=fromimage" "the image's Env in vm exec"
	assert_eq "no" "$(bg vm inspect "$a" -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["main"]["restart"])')" "restart policy"

	step "kill the server: with --restart no the VM stops"
	x "$a" killall httpd || true
	wait_for 90 is_stopped "$a"
	assert_eq 143 "$(inspect_field "$a" main_exit_code)" "main exit code (SIGTERM)"
	must_fail get "$pa"

	vm_create "$b" --image "$img" -p "127.0.0.1:$pb:80" --restart always
	wait_for 30 get "$pb"
	pid=$(x "$b" pidof httpd)
	step "kill the server (pid $pid): with --restart always it comes back"
	x "$b" kill "$pid"
	wait_for 60 new_httpd "$b" "$pid"
	wait_for 30 get "$pb"
	assert_eq "page-$img" "$(get "$pb")" "page after the restart"
	assert_eq running "$(vm_state "$b")" "state after the server restarted"

	bg vm rm -f "$a" "$b"
	bg image rm "$img"
}
