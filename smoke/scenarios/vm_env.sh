# vm run and vm exec carry the environment: -e (repeatable), --env-file,
# -w/--workdir, -u/--user; the image's Env applies to every exec unless
# overridden (the busybox image's PATH; an -e wins); a user who cannot
# enter the working directory gets an error that names it.
CLASS=pure
COST=30

run() {
	local n out ef=$WORK/out/env-$$.list
	step "vm run --image busybox -e A=1 -w /tmp -- sh -c 'echo \$A; pwd'"
	out=$(bg vm run --image busybox --rm -e A=1 -w /tmp -- sh -c 'echo $A; pwd')
	assert_eq $'1\n/tmp' "$out" "vm run -e/-w"
	# The busybox test image's WorkingDir is /root (mode 0700), which
	# nobody cannot enter (docker run -u nobody fails there too): -w /tmp.
	out=$(bg vm run --image busybox --rm -u nobody -w /tmp -- id -u)
	assert_eq 65534 "$out" "vm run -u nobody -- id -u"

	n=$(uniq_name env)
	vm_create "$n" --image busybox
	printf '# comment\nF1=from-file\nF2=two words\n' >"$ef"
	out=$(bg vm exec "$n" --env-file "$ef" -e F2=flag -w /etc -u nobody:nogroup -- sh -c 'echo "$F1|$F2"; pwd; id -u; id -g')
	assert_eq $'from-file|flag\n/etc\n65534\n65534' "$out" "vm exec --env-file/-e/-w/-u"
	assert_match "$(x "$n" env)" "PATH=[^ ]*/bin" "the image's PATH in vm exec env"
	assert_eq "/x" "$(bg vm exec "$n" -e PATH=/x -- /bin/sh -c 'echo $PATH')" "-e overrides the image's Env"
	must_fail bg vm exec "$n" -e 'BAD KEY=1' -- true
	assert_contains "$OUT" "BAD KEY" "error for a bad -e"
	must_fail bg vm exec "$n" -w /nonexistent -- true
	assert_contains "$OUT" "/nonexistent" "error for a missing -w"
	must_fail bg vm exec "$n" -u nobody -w /root -- id -u
	assert_contains "$OUT" "working directory /root" "error for a directory the user cannot enter"
}
