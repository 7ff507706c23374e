# --vcpu and --memory are what the guest sees.
CLASS=pure
COST=15

run() {
	local n kb
	n=$(uniq_name res)
	vm_create "$n" --image busybox --vcpu 2 --memory 384
	assert_eq 2 "$(vm_field "$n" vcpu)" "vcpu in vm ls"
	assert_eq 384 "$(vm_field "$n" memory_mib)" "memory in vm ls"
	assert_eq 2 "$(x "$n" grep -c ^processor /proc/cpuinfo)" "CPUs in the guest"
	kb=$(x "$n" awk '/MemTotal/{print $2}' /proc/meminfo)
	((kb > 300 * 1024 && kb <= 384 * 1024)) || fail "MemTotal ${kb} kB for --memory 384"
}
