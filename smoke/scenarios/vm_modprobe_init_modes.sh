# The kernel's modules disk works whoever is PID 1: `modprobe br_netfilter`
# (which pulls in bridge and llc) and lsmod in a guest booted in every init
# mode, same image: --init banger, --init image (systemd) and --init auto
# (which picks image for this image's systemd /sbin/init).
CLASS=pure
COST=180
IMAGES="debian-bookworm-systemd"

run() {
	local mode n out want
	for mode in banger image auto; do
		n=$(uniq_name mod-$mode)
		vm_create "$n" --image debian-bookworm-systemd --init "$mode"
		want=$mode
		[[ $mode == auto ]] && want=image
		assert_eq "$want" "$(inspect_field "$n" init_running)" "init mode of the --init $mode boot"
		[[ $want == banger ]] || assert_eq systemd "$(x "$n" cat /proc/1/comm)" "PID 1 with --init $mode"
		out=$(x "$n" sh -c 'modprobe br_netfilter && lsmod | grep br_netfilter')
		step "--init $mode: $out"
		assert_match "$out" '^br_netfilter ' "lsmod after modprobe br_netfilter (--init $mode)"
		bg vm rm -f "$n"
	done
}
