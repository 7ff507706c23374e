# Docker inside a banger VM: debian-bookworm-docker (Debian's docker.io)
# boots with systemd as PID 1, systemd starts dockerd, `docker load` takes a
# `docker save` tarball made on the host (banger-fixture docker-save: the
# busybox test image, no registry anywhere) and `docker run --rm` prints its
# output, on Docker's default bridge network (veth, br_netfilter, nf_nat,
# xt_* from the modules disk) and overlay2 storage (data root on the work
# disk: see the known gaps below).
CLASS=pure
COST=300
TIMEOUT=900
IMAGES="debian-bookworm-docker"

run() {
	local n out tar=$WORK/out/docker-busybox-$$.tar
	n=$(uniq_name dock)
	"$FIXTURE" docker-save -tag "docker-$RUN" "$tar" banger-smoke/busybox:1
	vm_create "$n" --image debian-bookworm-docker --memory 1024
	step "wait for dockerd (systemd unit docker.service)"
	out=$(x "$n" timeout 480 systemctl is-system-running --wait || true)
	step "system state: $out"
	if [[ $out != running ]]; then
		x "$n" systemctl --failed --no-legend --plain || true
		x "$n" journalctl -b -u docker -u containerd --no-pager | tail -n 30 || true
		fail "systemctl is-system-running: want running, got '$out'"
	fi
	assert_eq active "$(x "$n" systemctl is-active docker)" "docker.service"
	# Known gap of the catalog image (docs/architecture.md): /var/lib/docker
	# is on the overlay root, where overlay2 cannot nest, so dockerd falls
	# back to devicemapper on a loop file. Its data goes on the work disk
	# (ext4) instead, as a user would configure it.
	step "docker info (as built): $(x "$n" docker info --format '{{.Driver}}')"
	x "$n" sh -c 'mkdir -p /etc/docker && echo "{\"data-root\": \"/root/.docker-data\"}" >/etc/docker/daemon.json && timeout 300 systemctl restart docker'
	out=$(x "$n" docker info --format '{{.Driver}} {{.CgroupVersion}} {{.DockerRootDir}}')
	step "docker info: $out"
	assert_eq "overlay2 2 /root/.docker-data" "$out" "storage driver, cgroup version, data root"

	step "docker load (the tarball through vm exec's stdin)"
	bg vm exec "$n" -- sh -c 'cat >/root/busybox.tar' <"$tar"
	out=$(x "$n" timeout 120 docker load -i /root/busybox.tar)
	assert_contains "$out" "banger-smoke/busybox:1" "docker load"

	step "docker run --rm (default bridge network)"
	# Known gap too: the kernel enables AppArmor and docker.io recommends
	# the apparmor package, which the image lacks, so the default profile
	# cannot be loaded; the container runs unconfined.
	out=$(x "$n" timeout 180 docker run --rm --security-opt apparmor=unconfined banger-smoke/busybox:1 sh -c 'cat /etc/banger-fixture; ip -4 -o addr show eth0; ip route')
	echo "$out" | sed 's/^/    container: /'
	assert_contains "$out" "docker-$RUN" "the image's marker file"
	assert_match "$out" 'eth0 +inet 172\.17\.' "container address on docker0"
	assert_contains "$out" "default via 172.17.0.1" "container route"
	out=$(x "$n" sh -c 'lsmod | cut -d" " -f1 | sort')
	for m in overlay br_netfilter veth nf_nat bridge; do
		echo "$out" | grep -qx "$m" || fail "module $m not loaded in the guest; lsmod: $(echo $out)"
	done
	assert_contains "$(x "$n" ip -o link show docker0)" "docker0" "docker0 bridge"

	step "vm stop (systemd stops dockerd), then the disks are clean"
	local t0=$SECONDS dir d
	bg vm stop "$n"
	step "stopped in $((SECONDS - t0))s"
	dir=$(inspect_field "$n" dir)
	for d in root.ext4 system.cow; do
		e2fsck -fn "$dir/$d" >/dev/null || fail "$d not clean after vm stop"
	done
}
