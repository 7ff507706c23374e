# The kernel's modules disk works whoever is PID 1: `modprobe br_netfilter`
# (which pulls in bridge and llc) and lsmod in a guest booted with
# --init banger and with --init image (systemd), same image.
CLASS=pure
COST=120
IMAGES="debian-bookworm-systemd"

run() {
	local mode n out
	for mode in banger image; do
		n=$(uniq_name mod-$mode)
		vm_create "$n" --image debian-bookworm-systemd --init "$mode"
		assert_eq "$mode" "$(inspect_field "$n" init_running)" "init mode of the boot"
		[[ $mode == banger ]] || assert_eq systemd "$(x "$n" cat /proc/1/comm)" "PID 1 with --init image"
		out=$(x "$n" sh -c 'modprobe br_netfilter && lsmod | grep br_netfilter')
		step "--init $mode: $out"
		assert_match "$out" '^br_netfilter ' "lsmod after modprobe br_netfilter (--init $mode)"
		bg vm rm -f "$n"
	done
}
