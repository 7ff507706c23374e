# systemd as the guest's PID 1 (--init image, the catalog default of
# debian-bookworm-systemd): `vm run -- systemctl is-system-running --wait`
# says "running" (no failed unit: any failed unit fails the scenario, with
# `systemctl --failed` and its journal in the output); banger's agent runs
# beside systemd; `vm stop` goes through systemd's poweroff and banger-init's
# exitrd, so the work disk and system.cow pass `e2fsck -fn`; `/root` and
# `/etc` changes survive `vm stop` + `vm start`. Under TCG a systemd boot
# takes one to three minutes (docs/architecture.md), so the second boot is
# checked for the files only.
CLASS=pure
COST=240
TIMEOUT=900
IMAGES="debian-bookworm-systemd"

failed_units() { # NAME: the failed units with their journal, for the log
	x "$1" systemctl --failed --no-legend --plain || true
	x "$1" sh -c 'for u in $(systemctl --failed --no-legend --plain | cut -d" " -f1); do journalctl -b -u "$u" --no-pager | tail -n 15; done' || true
}

run() {
	local n out dir
	n=$(uniq_name sysd)
	track "$n"
	step "vm run --image debian-bookworm-systemd -- systemctl is-system-running --wait"
	out=$(bg vm run --name "$n" --image debian-bookworm-systemd -- timeout 420 systemctl is-system-running --wait || true)
	step "system state: $out"
	[[ $out == running ]] || { failed_units "$n"; fail "systemctl is-system-running: want running, got '$out'"; }
	assert_eq image "$(inspect_field "$n" init_running)" "init mode of the boot"
	assert_eq systemd "$(x "$n" cat /proc/1/comm)" "PID 1"
	assert_eq "" "$(x "$n" systemctl --failed --no-legend --plain)" "failed units"
	x "$n" sh -c 'echo work-data >/root/f && echo sys-data >/etc/banger-smoke && sync'

	step "vm stop (systemd's poweroff)"
	local t0=$SECONDS
	bg vm stop "$n"
	step "stopped in $((SECONDS - t0))s"
	assert_eq stopped "$(vm_state "$n")" "state after stop"
	dir=$(inspect_field "$n" dir)
	out=$(bg vm logs "$n" | tail -n 40)
	assert_contains "$out" "banger-init exitrd: unmounted /oldroot (overlay)" "console after stop"
	assert_contains "$out" "banger-init exitrd: poweroff after" "console after stop"
	# The kernel's last word: a poweroff where the machine has ACPI; on a
	# Firecracker-style kernel (acpi=off) banger-init turns the poweroff
	# into a reboot, which ends the VMM (-no-reboot).
	assert_match "$out" 'reboot: (Power down|Restarting system)' "console after stop"
	local d
	for d in root.ext4 system.cow; do
		e2fsck -fn "$dir/$d" || fail "$d not clean after vm stop"
		! dumpe2fs -h "$dir/$d" 2>/dev/null | grep -q needs_recovery || fail "$d: journal needs recovery after vm stop"
	done

	step "vm start"
	bg vm start "$n"
	assert_eq image "$(inspect_field "$n" init_running)" "init mode of the second boot"
	assert_eq work-data "$(x "$n" cat /root/f)" "/root/f after restart"
	assert_eq sys-data "$(x "$n" cat /etc/banger-smoke)" "/etc change after restart"
}
