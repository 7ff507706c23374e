# kernel pull of a url catalog entry (a tar.gz of vmlinuz + modules served
# over loopback HTTP in the daemon's namespace, sha256-pinned); a VM boots it.
CLASS=pure
COST=20

run() {
	local n rel
	assert_contains "$(bg kernel catalog)" "smoke-url" "kernel catalog"
	FAIL_HOOK="bg kernel rm smoke-url"
	step "kernel pull smoke-url"
	bg kernel pull smoke-url
	assert_contains "$(bg kernel ls)" "smoke-url" "kernel ls"
	rel=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["release"])' "$STATE/kernels/debian-cloud-amd64/manifest.json")
	n=$(uniq_name kvm)
	track "$n"
	assert_eq "$rel" "$(bg vm run --rm --name "$n" --image busybox --kernel smoke-url -- uname -r)" "guest kernel release"
	step "kernel pull again: refused, saying what to do"
	must_fail bg kernel pull smoke-url
	assert_contains "$OUT" "kernel rm smoke-url" "error for pulling a pulled kernel"
	bg kernel rm smoke-url
	assert_not_contains "$(bg kernel ls)" "smoke-url" "kernel ls after rm"
	must_fail bg kernel pull no-such-kernel-xyz
	assert_contains "$OUT" "no-such-kernel-xyz" "error for an unknown kernel"
}
