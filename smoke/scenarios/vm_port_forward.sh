# -p 127.0.0.1:PORT:80 reaches a server in the guest from the daemon's
# namespace; the same host port for a second VM fails before boot with a
# clear error and leaves no VM; forwards follow stop/start.
CLASS=pure
COST=25

get() { ip netns exec "$NS_D" curl -fsS --max-time 10 "http://127.0.0.1:$1/index.html"; }

run() {
	local a b port
	a=$(uniq_name pfa)
	b=$(uniq_name pfb)
	port=$((20000 + RANDOM % 20000))
	vm_create "$a" --image busybox -p "127.0.0.1:$port:80"
	assert_contains "$(bg vm ls)" "$port" "vm ls ports column"
	x "$a" sh -c "mkdir -p /root/www && echo page-$a >/root/www/index.html && httpd -p 80 -h /root/www </dev/null >/dev/null 2>&1"
	assert_eq "page-$a" "$(get "$port")" "page through the forward"
	step "second VM with host port $port"
	track "$b"
	must_fail bg vm create --name "$b" --image busybox -p "127.0.0.1:$port:80"
	assert_contains "$OUT" "$port" "error for a taken host port"
	! vm_exists "$b" || fail "VM $b left behind after its create failed"
	assert_eq "page-$a" "$(get "$port")" "first VM's forward still works"
	step "stop $a: the port closes"
	bg vm stop "$a"
	must_fail get "$port"
	step "start $a: the forward is back"
	bg vm start "$a"
	x "$a" sh -c "httpd -p 80 -h /root/www </dev/null >/dev/null 2>&1"
	assert_eq "page-$a" "$(get "$port")" "page after stop/start"
	step "rm $a: the port is free for a new VM"
	bg vm rm -f "$a"
	must_fail get "$port"
	vm_create "$b" --image busybox --no-start -p "127.0.0.1:$port:80"
}
