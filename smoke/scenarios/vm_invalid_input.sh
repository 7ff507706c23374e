# Bad input fails with an error naming the bad value, and leaves no VM.
CLASS=pure
COST=3

run() {
	local n bad
	for bad in UPPER under_score -dash "$(printf 'a%.0s' {1..64})" 'sp ace'; do
		step "vm create --name '$bad'"
		must_fail bg vm create --name "$bad" --image busybox --no-start
		assert_contains "$OUT" "$bad" "error for name '$bad'"
		assert_not_contains "$(bg vm ls -a)" "$bad " "vm ls -a"
	done
	n=$(uniq_name inval)
	track "$n"
	check() { # flag value
		step "vm create $n $1 $2"
		must_fail bg vm create --name "$n" --image busybox --no-start "$1" "$2"
		assert_contains "$OUT" "$2" "error for $1 $2"
		! vm_exists "$n" || fail "VM $n exists after a rejected create ($1 $2)"
	}
	check --vcpu -1
	check --vcpu 4096
	check --memory 1
	check --system-overlay-size lots
	check --work-disk-size -3G
	check --image no-such-image-xyz
	check --kernel no-such-kernel-xyz
	check -p 99999:80
	check -p 127.0.0.1:8080:http
}
