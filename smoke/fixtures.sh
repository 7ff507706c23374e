# Fixtures for the smoke suite, cached under $SMOKE_CACHE and keyed by their
# inputs (sourced by run.sh; uses ROOT, BANGER, FIXTURE, SMOKE_CACHE, log).
#
#   busybox-<key>/          OCI layout of the busybox-static test image
#                           (key: busybox-static version + testfixture code)
#   state-<key>/            a daemon state dir snapshot taken with the daemon
#                           stopped, after `kernel pull debian-cloud-amd64`,
#                           `image import <busybox layout> --name busybox` and
#                           `image pull debian-bookworm` (debootstrap). Each run
#                           copies it (cp -a) into its own state dir before its
#                           daemon starts. The store records image dirs as
#                           absolute paths, so the copy's rows are rewritten
#                           (sqlite3) from the snapshot's origin path to the
#                           run's; origin is in state-<key>.origin.
#                           (key: kernel package version, debootstrap and
#                           busybox versions, image catalog, image/kernel/store
#                           code)
#   kernel-<key>.tar.gz     vmlinuz + modules/ of the snapshot's kernel, a
#                           url-type kernel bundle served over loopback HTTP for
#                           kernel_pull; .sha256 beside it.
#
# Building state-<key> needs the host's apt mirrors (apt-get download,
# debootstrap), which a fresh network namespace cannot reach, so that one
# daemon runs in the root namespace. It only pulls: the daemon creates no
# bridge, tap, route or nftables rule until a VM starts, and this script
# starts none there. Before starting it we check the root namespace holds no
# banger taps or nftables table, so its startup reconcile has nothing to
# remove either.

#   kbuild/                 the kernel build cache (--kernel-build-cache)
#                           of every daemon here: kernels banger builds
#                           (debsrc, e.g. microvm-6.1), one entry per
#                           source package version + config hash (the
#                           kernel pull's own key), reused by every run and
#                           by the Go VM tests. A run with --kernel NAME
#                           pulls NAME with a root-namespace pull-only
#                           daemon (a build needs the apt mirrors; a cached
#                           build only copies) into the run's work dir.
#
#   image-<name>-<key>/     one more catalog image, built only for runs whose
#                           scenarios declare it (IMAGES="name ..."; e.g. the
#                           systemd and Docker debootstrap images, minutes to
#                           build): dir/ is the daemon's images/<id> directory
#                           and row.sql its store row. A run hard-links dir/
#                           into its state (the daemon never writes an image's
#                           files in place: a seed refresh renames a new file
#                           over the old) and inserts the row. Built by a
#                           root-namespace daemon that only pulls, on a state
#                           dir holding the snapshot's SSH key, so the seed
#                           authorizes the key the run's daemon has.
#                           (key: the snapshot's key and the image's name)
#
# waitfg CMD...: run CMD as a waited-for background job, so an INT/TERM trap in
# run.sh fires at once (bash defers traps while a foreground child runs);
# cleanup kills $FG_PID.
waitfg() {
	"$@" &
	FG_PID=$!
	wait "$FG_PID"
	local rc=$?
	FG_PID=
	return $rc
}

fixture_hash() { sha256sum | cut -c1-16; }

src_hash() {
	(cd "$ROOT" && find "$@" -name '*.go' ! -name '*_test.go' -print0 2>/dev/null | sort -z | xargs -0 cat 2>/dev/null) | sha256sum | cut -c1-16
}

pkg_version() { dpkg-query -W -f '${Version}' "$1" 2>/dev/null || echo none; }

kernel_pkg_version() {
	local p
	p=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image/{print $2; exit}')
	echo "$p=$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/{print $2}')"
}

fixtures_ensure() {
	local kbb kst
	kbb=$(printf '%s\n' "$(pkg_version busybox-static)" "$(src_hash internal/testfixture cmd/banger-fixture)" | fixture_hash)
	kst=$(printf '%s\n' "$kbb" "$(kernel_pkg_version)" "$(pkg_version debootstrap)" \
		"$(cat "$ROOT"/internal/imagecat/*.json | sha256sum)" \
		"$(src_hash internal/imagebuild internal/imagecat internal/kernelcat internal/store internal/model internal/disk)" | fixture_hash)
	FIX_LAYOUT=$SMOKE_CACHE/busybox-$kbb
	FIX_SNAPSHOT=$SMOKE_CACHE/state-$kst
	FIX_KBUNDLE=$SMOKE_CACHE/kernel-$kst.tar.gz

	if [[ ! -f $FIX_LAYOUT/index.json ]]; then
		log "fixture: busybox OCI layout -> $FIX_LAYOUT"
		rm -rf "$FIX_LAYOUT.tmp"
		waitfg "$FIXTURE" busybox-layout "$FIX_LAYOUT.tmp" || return 1
		mv "$FIX_LAYOUT.tmp" "$FIX_LAYOUT" || return 1
	fi
	if [[ ! -f $FIX_SNAPSHOT.origin ]]; then
		build_snapshot || return 1
	fi
	if [[ ! -f $FIX_KBUNDLE.sha256 ]]; then
		log "fixture: kernel bundle -> $FIX_KBUNDLE"
		local kd=$FIX_SNAPSHOT/kernels/debian-cloud-amd64 tmp
		tmp=$(mktemp -d "$SMOKE_CACHE/.kb.XXXXXX")
		cp "$kd/vmlinuz" "$tmp/vmlinuz" && cp -a "$kd/modules" "$tmp/modules" &&
			waitfg tar -C "$tmp" -czf "$FIX_KBUNDLE.tmp" vmlinuz modules &&
			mv "$FIX_KBUNDLE.tmp" "$FIX_KBUNDLE" &&
			sha256sum "$FIX_KBUNDLE" | cut -d' ' -f1 >"$FIX_KBUNDLE.sha256.tmp" &&
			mv "$FIX_KBUNDLE.sha256.tmp" "$FIX_KBUNDLE.sha256"
		local rc=$?
		rm -rf "$tmp"
		((rc == 0)) || return 1
	fi
	if [[ -n ${SMOKE_KERNEL:-} && $SMOKE_KERNEL != debian-cloud-amd64 ]]; then
		pull_smoke_kernel "$SMOKE_KERNEL" || return 1
	fi
	FIX_IMAGES_KEY=$(printf '%s\n' "$kst" images-v1 | fixture_hash)
	local img missing=()
	for img in ${SMOKE_IMAGES:-}; do
		[[ -f $SMOKE_CACHE/image-$img-$FIX_IMAGES_KEY/row.sql ]] || missing+=("$img")
	done
	if ((${#missing[@]} > 0)); then
		build_images "${missing[@]}" || return 1
	fi
	# Entries for inputs that changed are dead weight: keep only the current
	# (extra images of the current key stay, asked for by this run or not).
	local e
	for e in "$SMOKE_CACHE"/busybox-* "$SMOKE_CACHE"/state-* "$SMOKE_CACHE"/kernel-* "$SMOKE_CACHE"/image-*; do
		case $e in
		"$FIX_LAYOUT" | "$FIX_SNAPSHOT" | "$FIX_SNAPSHOT.origin" | "$FIX_KBUNDLE" | "$FIX_KBUNDLE.sha256") ;;
		"$SMOKE_CACHE"/image-*-"$FIX_IMAGES_KEY") ;;
		*) [[ -e $e ]] && rm -rf "$e" ;;
		esac
	done
	log "fixtures ready (cache $SMOKE_CACHE)"
}

# pull_smoke_kernel NAME: pull the catalog kernel NAME with a pull-only
# daemon in the root namespace, through the shared build cache, into
# $WORK/kernel-NAME (FIX_SMOKE_KERNEL), which run.sh copies into its state.
pull_smoke_kernel() {
	local b=$WORK/kpull t0
	rm -rf "$b"
	mkdir -p "$b"
	t0=$(date +%s)
	log "fixture: kernel $1 (a cold build takes long; cached in $SMOKE_CACHE/kbuild)"
	start_fixture_daemon "$b/state" "$b/run" "$b/daemon.log" || { stop_fixture_daemon; tail -20 "$b/daemon.log"; return 1; }
	local ok=0
	waitfg "$BANGER" --socket "$FIXSOCK" kernel pull "$1" >"$b/pull.log" 2>&1 && ok=1
	stop_fixture_daemon
	if ((!ok)); then
		tail -20 "$b/pull.log" "$b/daemon.log"
		return 1
	fi
	FIX_SMOKE_KERNEL=$WORK/kernel-$1
	mv "$b/state/kernels/$1" "$FIX_SMOKE_KERNEL" || return 1
	rm -rf "$b"
	log "fixture: kernel $1 ready in $(($(date +%s) - t0)) s"
}

build_snapshot() {
	log "fixture: state snapshot (kernel pull + debootstrap image, ~2 min) -> $FIX_SNAPSHOT"
	local b=$SMOKE_CACHE/.build
	rm -rf "$b" "$FIX_SNAPSHOT"
	mkdir -p "$b"
	local sock ok=0
	start_fixture_daemon "$b/state" "$b/run" "$b/daemon.log" && ok=1
	sock=$FIXSOCK
	if ((ok)); then
		ok=0
		waitfg "$BANGER" --socket "$sock" kernel pull debian-cloud-amd64 &&
			waitfg "$BANGER" --socket "$sock" image import "$FIX_LAYOUT" --name busybox &&
			waitfg "$BANGER" --socket "$sock" image pull debian-bookworm &&
			"$BANGER" --socket "$sock" image ls && ok=1
	fi
	stop_fixture_daemon
	if ((!ok)); then
		tail -20 "$b/daemon.log"
		return 1
	fi
	rm -rf "$b/run" "$b/state/vms"
	mv "$b/state" "$FIX_SNAPSHOT" || return 1
	echo "$b/state" >"$FIX_SNAPSHOT.origin"
	rm -rf "$b"
}

# start_fixture_daemon STATE RUNDIR LOG: a daemon in the root namespace for
# pulls only (see the top of this file); sets FIXDAEMON_PID and FIXSOCK.
start_fixture_daemon() {
	if ip -o link show 2>/dev/null | grep -Eq ': bg(r|[0-9a-f]{4})[0-9a-f]+[@:]'; then
		log "root namespace has banger taps (bgr*, bg<tag>*): refusing to start the fixture daemon there"
		return 1
	fi
	if nft list tables 2>/dev/null | grep -Eq '^table inet banger(-[0-9a-f]{4})?$'; then
		log "root namespace has a banger nftables table (inet banger*): refusing to start the fixture daemon there"
		return 1
	fi
	mkdir -p "$2"
	"$BANGER" daemon --state-dir "$1" --runtime-dir "$2" --bridge-name bsmkfix0 --kernel-build-cache "$SMOKE_CACHE/kbuild" >"$3" 2>&1 &
	FIXDAEMON_PID=$!
	FIXSOCK=$2/banger.sock
	local i
	for i in $(seq 1 100); do
		"$BANGER" --socket "$FIXSOCK" version 2>/dev/null | grep -qi daemon && return 0
		sleep 0.2
	done
	return 1
}

stop_fixture_daemon() {
	kill -TERM "$FIXDAEMON_PID" 2>/dev/null
	wait "$FIXDAEMON_PID" 2>/dev/null
	FIXDAEMON_PID=
}

# build_images NAME...: pull these catalog images (in parallel: different
# names never wait for each other in the daemon) with a pull-only daemon
# whose state holds the snapshot's SSH key, and cache each as
# image-<name>-<key>/{dir,row.sql,origin}.
build_images() {
	local b=$SMOKE_CACHE/.build-images img ok=1 t0
	log "fixture: catalog images $* (debootstrap, minutes) -> $SMOKE_CACHE/image-*-$FIX_IMAGES_KEY"
	rm -rf "$b"
	mkdir -p "$b/state"
	cp -a "$FIX_SNAPSHOT/ssh" "$b/state/ssh" || return 1
	t0=$(date +%s)
	if start_fixture_daemon "$b/state" "$b/run" "$b/daemon.log"; then
		local pids=()
		for img in "$@"; do
			"$BANGER" --socket "$FIXSOCK" image pull "$img" >"$b/pull-$img.log" 2>&1 &
			pids+=($!)
		done
		for p in "${pids[@]}"; do wait "$p" || ok=0; done
	else
		ok=0
	fi
	stop_fixture_daemon
	if ((!ok)); then
		tail -5 "$b"/pull-*.log "$b/daemon.log" 2>/dev/null
		return 1
	fi
	for img in "$@"; do
		local id e=$SMOKE_CACHE/image-$img-$FIX_IMAGES_KEY
		id=$(sqlite3 "$b/state/banger.db" "SELECT id FROM images WHERE name = '$img';")
		[[ -n $id && -d $b/state/images/$id ]] || { log "image $img: no row or dir after the pull"; return 1; }
		rm -rf "$e" "$e.tmp"
		mkdir -p "$e.tmp"
		mv "$b/state/images/$id" "$e.tmp/dir" || return 1
		echo "$b/state/images/$id" >"$e.tmp/origin"
		sqlite3 "$b/state/banger.db" ".mode insert images" "SELECT * FROM images WHERE id = '$id';" >"$e.tmp/row.sql" || return 1
		mv "$e.tmp" "$e" || return 1
	done
	log "fixture: catalog images built in $(($(date +%s) - t0))s"
	rm -rf "$b"
}

# snapshot_restore DIR: a private copy of the snapshot for this run's daemon,
# plus the extra images the run's scenarios asked for (SMOKE_IMAGES).
snapshot_restore() {
	local dst=$1 origin img e id
	origin=$(cat "$FIX_SNAPSHOT.origin")
	waitfg cp -a --sparse=always "$FIX_SNAPSHOT" "$dst" || return 1
	sqlite3 "$dst/banger.db" "UPDATE images SET data = replace(data, '\"$origin/', '\"$dst/');" || return 1
	for img in ${SMOKE_IMAGES:-}; do
		e=$SMOKE_CACHE/image-$img-$FIX_IMAGES_KEY
		id=$(basename "$(cat "$e/origin")")
		# Hard links when the cache and the work dir share a filesystem.
		cp -al "$e/dir" "$dst/images/$id" 2>/dev/null || waitfg cp -a --sparse=always "$e/dir" "$dst/images/$id" || return 1
		sqlite3 "$dst/banger.db" <"$e/row.sql" || return 1
		# The row's "dir" is the image dir itself: no trailing slash.
		sqlite3 "$dst/banger.db" "UPDATE images SET data = replace(data, '\"$(cat "$e/origin")\"', '\"$dst/images/$id\"') WHERE id = '$id';" || return 1
	done
}
