# Docker inside a banger VM: debian-bookworm-docker (Debian's docker.io)
# boots with systemd as PID 1, systemd starts dockerd, `docker load` takes a
# `docker save` tarball made on the host (banger-fixture docker-save: the
# busybox test image, no registry anywhere) and `docker run --rm` prints its
# output, on Docker's default bridge network (veth, br_netfilter, nf_nat,
# xt_* from the modules disk) and overlay2 storage, as the image is built:
# its /etc/docker/daemon.json puts the data root on the work disk (ext4;
# overlay2 cannot nest on the overlay root) and apparmor loads Docker's
# default container profile. A container serves another over docker0, a
# published port answers from the daemon's namespace, and a container
# reaches the uplink through Docker's masquerade and banger's NAT.
CLASS=pure
COST=300
TIMEOUT=900
IMAGES="debian-bookworm-docker"

run() {
	local n out tar=$WORK/out/docker-busybox-$$.tar
	n=$(uniq_name dock)
	"$FIXTURE" docker-save -tag "docker-$RUN" "$tar" banger-smoke/busybox:1
	vm_create "$n" --image debian-bookworm-docker --memory 1024 --nat
	step "wait for dockerd (systemd unit docker.service)"
	out=$(x "$n" timeout 480 systemctl is-system-running --wait || true)
	step "system state: $out"
	if [[ $out != running ]]; then
		x "$n" systemctl --failed --no-legend --plain || true
		x "$n" journalctl -b -u docker -u containerd --no-pager | tail -n 30 || true
		fail "systemctl is-system-running: want running, got '$out'"
	fi
	assert_eq active "$(x "$n" systemctl is-active docker)" "docker.service"
	out=$(x "$n" docker info --format '{{.Driver}} {{.CgroupVersion}} {{.DockerRootDir}}')
	step "docker info: $out"
	assert_eq "overlay2 2 /root/.docker-data" "$out" "storage driver, cgroup version, data root (the image's daemon.json)"
	assert_contains "$(x "$n" docker info --format '{{.SecurityOptions}}')" "apparmor" "docker security options"

	step "docker load (the tarball through vm exec's stdin)"
	bg vm exec "$n" -- sh -c 'cat >/root/busybox.tar' <"$tar"
	out=$(x "$n" timeout 120 docker load -i /root/busybox.tar)
	assert_contains "$out" "banger-smoke/busybox:1" "docker load"

	step "docker run --rm (default bridge network, docker-default AppArmor profile)"
	out=$(x "$n" timeout 180 docker run --rm banger-smoke/busybox:1 sh -c 'cat /etc/banger-fixture; ip -4 -o addr show eth0; ip route; cat /proc/self/attr/current')
	echo "$out" | sed 's/^/    container: /'
	assert_contains "$out" "docker-$RUN" "the image's marker file"
	assert_match "$out" 'eth0 +inet 172\.17\.' "container address on docker0"
	assert_contains "$out" "default via 172.17.0.1" "container route"
	assert_contains "$out" "docker-default (enforce)" "the container's AppArmor profile"

	step "a published container serves another container and the daemon's namespace"
	x "$n" timeout 120 docker run -d --name web -p 8080:80 banger-smoke/busybox:1 httpd -f -p 80 -h /etc >/dev/null
	local wip gip
	wip=$(x "$n" docker inspect -f '{{.NetworkSettings.IPAddress}}' web)
	assert_match "$wip" '^172\.17\.' "web container address"
	out=$(x "$n" timeout 120 docker run --rm banger-smoke/busybox:1 sh -c "printf 'GET /banger-fixture HTTP/1.0\r\n\r\n' | nc -w 5 $wip 80 | tail -n 1")
	assert_eq "docker-$RUN" "$out" "container to container over docker0"
	gip=$(vm_ip "$n")
	out=$(ip netns exec "$NS_D" curl -fsS --max-time 10 "http://$gip:8080/banger-fixture")
	assert_eq "docker-$RUN" "$out" "published port 8080 from the daemon's namespace"
	out=$(x "$n" timeout 120 docker run --rm banger-smoke/busybox:1 sh -c "printf 'GET / HTTP/1.0\r\nHost: 192.0.2.1\r\n\r\n' | nc -w 5 192.0.2.1 80 | tail -n 1")
	assert_eq "$UPLINK_TOKEN" "$out" "the uplink from a container (docker masquerade + banger NAT)"
	# Loaded from the modules disk, or built into the kernel (the cloud
	# kernel has them all as modules; a microVM kernel builds overlay in).
	out=$(x "$n" sh -c 'lsmod | cut -d" " -f1; sed -n "s#.*/\([^/]*\)\.ko\$#\1#p" /lib/modules/$(uname -r)/modules.builtin' | tr - _ | sort -u)
	for m in overlay br_netfilter veth nf_nat bridge; do
		echo "$out" | grep -qx "$m" || fail "module $m neither loaded nor built into the guest kernel; lsmod + modules.builtin: $(echo $out)"
	done
	step "netfilter modules loaded on demand: $(echo "$out" | grep -E '^(xt|nft|nf)_' | tr '\n' ' ')"
	assert_contains "$(x "$n" ip -o link show docker0)" "docker0" "docker0 bridge"

	# httpd as a container's PID 1 ignores SIGTERM: remove it now rather
	# than have dockerd's shutdown wait out its 10 s stop timeout.
	x "$n" docker rm -f web >/dev/null
	step "vm stop (systemd stops dockerd), then the disks are clean"
	local t0=$SECONDS dir d
	bg vm stop "$n"
	step "stopped in $((SECONDS - t0))s"
	dir=$(inspect_field "$n" dir)
	for d in root.ext4 system.cow; do
		e2fsck -fn "$dir/$d" >/dev/null || fail "$d not clean after vm stop"
	done
}
