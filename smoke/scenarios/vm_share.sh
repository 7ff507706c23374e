# -v shares: a host file is read in the guest and a guest file lands on
# the host (owner and mode kept), :ro refuses guest writes, a symlink in the
# share stays in the guest, and the share is back after vm stop / start.
CLASS=pure
COST=30

run() {
	local n d ro
	n=$(uniq_name share)
	d=$(mktemp -d "$WORK/out/share.XXXXXX")
	ro=$(mktemp -d "$WORK/out/share-ro.XXXXXX")
	echo from-host >"$d/h"
	chown 1234:2345 "$d/h"
	chmod 640 "$d/h"
	ln -s /etc "$d/etc-link"
	echo read-only >"$ro/r"
	vm_create "$n" --image busybox -v "$d:/mnt/d" -v "$ro:/mnt/ro:ro"
	assert_contains "$(bg vm inspect "$n")" "$d -> /mnt/d (rw, virtiofs)" "vm inspect"
	assert_eq "1234 2345 640 from-host" "$(x "$n" sh -c 'echo $(stat -c "%u %g %a" /mnt/d/h) $(cat /mnt/d/h)')" "host file in the guest"
	x "$n" sh -c 'echo from-guest >/mnt/d/g && chown 4321:5432 /mnt/d/g && chmod 604 /mnt/d/g'
	assert_eq "4321 5432 604 from-guest" "$(echo $(stat -c '%u %g %a' "$d/g") $(cat "$d/g"))" "guest file on the host"
	step ":ro refuses guest writes, even after a guest remount"
	must_fail x "$n" touch /mnt/ro/x
	must_fail x "$n" sh -c 'mount -o remount,rw /mnt/ro; touch /mnt/ro/x'
	[[ ! -e $ro/x ]] || fail "the guest wrote into a read-only share"
	assert_eq read-only "$(x "$n" cat /mnt/ro/r)" "read-only share"
	step "a symlink to /etc in the share is the guest's /etc"
	assert_eq "$n" "$(x "$n" cat /mnt/d/etc-link/hostname)" "etc-link/hostname"
	step "vm snapshot is refused for a VM with shares"
	must_fail bg vm snapshot "$n"
	assert_contains "$OUT" "host directory shares"
	step "vm stop / start"
	bg vm stop "$n"
	bg vm start "$n"
	assert_eq from-guest "$(x "$n" cat /mnt/d/g)" "share after restart"
}
