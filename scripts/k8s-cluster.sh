#!/usr/bin/env bash
# A real Kubernetes control plane on loopback, for the banger kubelet tests:
# Debian's etcd, kube-apiserver, kube-controller-manager and kube-scheduler
# (built by scripts/k8s-build.sh), all listening on 127.0.0.1 in the
# caller's network namespace, with a PKI of their own.
#
# Usage:
#   scripts/k8s-cluster.sh up DIR                   start a cluster whose state lives in DIR
#   scripts/k8s-cluster.sh kubelet-config DIR NODE  node client cert + DIR/kubelet-NODE.kubeconfig
#   scripts/k8s-cluster.sh selftest DIR             check the node RBAC below against the live cluster
#   scripts/k8s-cluster.sh down DIR                 stop what `up` started (idempotent); DIR stays
#
# After `up`, DIR holds:
#   env                  shell lines (source it): KUBECONFIG KUBECTL APISERVER CA K8S_BIN
#                        K8S_VERSION ETCD APISERVER_PORT ETCD_PORT ETCD_PEER_PORT
#                        CONTROLLER_MANAGER_PORT SCHEDULER_PORT
#   admin.kubeconfig     cluster admin (O=system:masters)
#   pki/                 ca.{crt,key}, apiserver, apiserver-kubelet-client, sa.{key,pub},
#                        admin, controller-manager, scheduler, kubelet-NODE (each
#                        NAME.crt + NAME.key), front-proxy-ca, front-proxy-client
#   logs/NAME.log        etcd, kube-apiserver, kube-controller-manager, kube-scheduler
#   pids/NAME.pid        each started with setsid: pid = its process group
#   etcd/                etcd's data
#
# Ports: five free TCP ports drawn at random from 20000-32767 (below the
# kernel's ephemeral range, so outgoing connections don't take them) and
# checked free with ss; written to DIR/env.
#
# Env: K8S_VERSION (default 1.37.2), K8S_UP_TIMEOUT seconds per component
# (default 180; the box is shared and 2 cores).
#
# Measured (2026-12, binaries cached, 2 shared cores at load 2.6-4.2):
# `up` takes 6.5-12 s (etcd <1 s, apiserver /readyz 5-6 s), `down` 3 s;
# `selftest` 10 s. A dead node: NotReady 21-23 s after its last Lease
# renewal, its pods marked for deletion ~10 s later.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
version="${K8S_VERSION:-1.37.2}"
timeout="${K8S_UP_TIMEOUT:-180}"
service_range=10.96.0.0/24
service_ip=10.96.0.1 # the first IP of service_range: the `kubernetes` Service
components=(kube-scheduler kube-controller-manager kube-apiserver etcd)

log() { echo "k8s-cluster: $*" >&2; }
die() { log "$*"; exit 1; }
usage() {
	sed -n '8,12p' "$0" | sed 's/^# *//' >&2
	exit 2
}

# pick_port VAR: a free loopback TCP port, distinct from those already picked.
picked=" "
pick_port() {
	local p
	for _ in $(seq 500); do
		p=$((20000 + RANDOM % 12768))
		case "$picked" in *" $p "*) continue ;; esac
		if [ -z "$(ss -Htan "( sport = :$p )")" ]; then
			picked="$picked$p "
			printf -v "$1" %s "$p"
			return 0
		fi
	done
	die "no free TCP port found in 20000-32767"
}

# --- PKI --------------------------------------------------------------------

newkey() {
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>>"$dir/logs/pki.log"
	chmod 600 "$1"
}

# sign NAME SUBJECT EKU [SANS [CA]]: pki/NAME.{key,crt} signed by pki/CA
# (default: the cluster CA). Random serials, no serial file: kubelet-config
# may run concurrently.
sign() {
	local name=$1 subj=$2 eku=$3 sans=${4:-} ca=${5:-ca} pki=$dir/pki
	local ext="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=$eku"
	[ -n "$sans" ] && ext="$ext
subjectAltName=$sans"
	newkey "$pki/$name.key"
	openssl req -new -key "$pki/$name.key" -subj "$subj" 2>>"$dir/logs/pki.log" |
		openssl x509 -req -CA "$pki/$ca.crt" -CAkey "$pki/$ca.key" \
			-set_serial "0x$(openssl rand -hex 16)" -days 3650 \
			-extfile <(printf '%s\n' "$ext") -out "$pki/$name.crt.tmp" 2>>"$dir/logs/pki.log" ||
		die "openssl failed to sign $name (see $dir/logs/pki.log)"
	mv "$pki/$name.crt.tmp" "$pki/$name.crt"
}

make_ca() { # NAME CN
	newkey "$dir/pki/$1.key"
	openssl req -x509 -new -key "$dir/pki/$1.key" -subj "/CN=$2" -days 3650 \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
		-out "$dir/pki/$1.crt" 2>>"$dir/logs/pki.log" || die "openssl failed to make $1 (see $dir/logs/pki.log)"
}

make_pki() {
	local pki=$dir/pki
	mkdir -p "$pki"
	make_ca ca banger-test-ca
	# The front-proxy CA signs only the apiserver's aggregation-layer client;
	# without --requestheader-client-ca-file the controller-manager and the
	# scheduler log "missing content for CA bundle" forever.
	make_ca front-proxy-ca banger-test-front-proxy-ca
	sign front-proxy-client "/CN=front-proxy-client" clientAuth "" front-proxy-ca
	sign apiserver "/CN=kube-apiserver" serverAuth \
		"IP:127.0.0.1,IP:$service_ip,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
	# Not in system:masters: the apiserver's calls to kubelets (logs, exec)
	# get exactly system:kubelet-api-admin, bound in apply_rbac.
	sign apiserver-kubelet-client "/CN=kube-apiserver-kubelet-client" clientAuth
	sign admin "/O=system:masters/CN=banger-test-admin" clientAuth
	# The bootstrap RBAC policy already binds these two user names.
	sign controller-manager "/CN=system:kube-controller-manager" clientAuth
	sign scheduler "/CN=system:kube-scheduler" clientAuth
	newkey "$pki/sa.key"
	openssl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>>"$dir/logs/pki.log"
}

# kubeconfig FILE USER CERTNAME: a self-contained kubeconfig (certs inline,
# so it can be copied anywhere) for pki/CERTNAME.
kubeconfig() {
	local f=$1 user=$2 name=$3 pki=$dir/pki
	(umask 077 && cat >"$f.tmp") <<EOF
apiVersion: v1
kind: Config
clusters:
- name: banger-test
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 "$pki/ca.crt")
users:
- name: "$user"
  user:
    client-certificate-data: $(base64 -w0 "$pki/$name.crt")
    client-key-data: $(base64 -w0 "$pki/$name.key")
contexts:
- name: banger-test
  context:
    cluster: banger-test
    user: "$user"
current-context: banger-test
EOF
	mv "$f.tmp" "$f"
}

# --- processes --------------------------------------------------------------

# start NAME CMD...: in its own session (pid = pgid), so down can kill it
# and anything it forks.
start() {
	local name=$1
	shift
	setsid "$@" >"$dir/logs/$name.log" 2>&1 </dev/null &
	echo $! >"$dir/pids/$name.pid"
}

# ours PID: alive, and started for this DIR (guards against pid reuse).
ours() {
	[ -r "/proc/$1/cmdline" ] && tr '\0' '\n' 2>/dev/null <"/proc/$1/cmdline" | grep -qF -- "$dir/"
}

fail() {
	local name=$1
	shift
	log "$name: $*"
	if [ -f "$dir/logs/$name.log" ]; then
		log "last lines of $dir/logs/$name.log:"
		tail -n 25 "$dir/logs/$name.log" >&2
	fi
	log "stopping what was started"
	down
	exit 1
}

# wait_ready NAME WHAT CMD...: until CMD succeeds; fails, showing NAME's
# log, if NAME dies or the timeout passes.
wait_ready() {
	local name=$1 what=$2 t0=$SECONDS pid
	shift 2
	pid=$(cat "$dir/pids/$name.pid")
	until "$@" >/dev/null 2>&1; do
		ours "$pid" || fail "$name" "exited before $what"
		[ $((SECONDS - t0)) -lt "$timeout" ] || fail "$name" "no $what after ${timeout}s"
		sleep 0.5
	done
	log "$what after $((SECONDS - t0))s"
}

curl_ok() { # URL [curl args]: the body is exactly ok
	[ "$(curl -fsS --max-time 5 "$@")" = ok ]
}

kubectl() { "$K8S_BIN/kubectl" --kubeconfig "$dir/admin.kubeconfig" --request-timeout 10s "$@"; }

# --- RBAC -------------------------------------------------------------------

# The banger kubelet is a virtual-kubelet (node/nodeutil v1.14.1). What it
# calls, read from its source, and who grants it (the Node authorizer and
# its NodeRules, plugin/pkg/auth/authorizer/node in v1.37.2, answer first
# for users system:node:NAME in group system:nodes; NodeRestriction
# admission then limits writes to the node's own objects):
#   nodes: create; get own; patch own status            Node authorizer
#   leases in kube-node-lease: get/create/update own     Node authorizer
#   pods: list/watch with fieldSelector spec.nodeName=own  Node authorizer
#   pods/status: update; pods: delete (own pods)         Node authorizer
#   events: create/update/patch (event broadcaster)     NodeRules
#   services: list/watch (informer, service env vars)   NodeRules
#   tokenreviews, subjectaccessreviews: create           NodeRules
#     (webhook authn/authz of its HTTPS API: kubectl logs/exec)
#   secrets, configmaps: list/watch, ALL namespaces      NOT granted
#     nodeutil.NewNode starts cluster-wide informers on both; the Node
#     authorizer only lets a node read single secrets/configmaps that a pod
#     bound to it references, by name, so those are the only rules below.
#     The price: `list` returns objects whole, so every banger node can read
#     every Secret in the cluster (`kubectl get secrets -A -o yaml` works
#     with a kubelet kubeconfig), while `get` of one Secret by name stays
#     limited to those its pods use (no `get` below: the informers never
#     call it). Nodes that run untrusted tenants' workloads should not
#     share a cluster with secrets those tenants must not see.
apply_rbac() {
	kubectl apply -f - >/dev/null <<'EOF'
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: banger-kubelet
rules:
# virtual-kubelet's cluster-wide secret and configmap informers (pod env
# and volumes); the Node authorizer grants no list/watch without a name.
- apiGroups: [""]
  resources: ["secrets", "configmaps"]
  verbs: ["list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: banger-kubelet
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: banger-kubelet
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: Group
  name: system:nodes
---
# The apiserver's client cert for kubectl logs/exec/port-forward reaching
# a kubelet: the kubelet asks the apiserver (SubjectAccessReview) whether
# this user may use nodes/proxy, nodes/log...
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: kube-apiserver-kubelet-client
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:kubelet-api-admin
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: User
  name: kube-apiserver-kubelet-client
EOF
}

# --- commands ---------------------------------------------------------------

up() {
	local t0=$SECONDS
	command -v etcd >/dev/null || die "no etcd on PATH: apt-get install -y etcd-server (or scripts/install-deps.sh)"
	for c in openssl curl ss setsid base64; do
		command -v "$c" >/dev/null || die "no $c on PATH"
	done
	for c in "${components[@]}"; do
		if [ -f "$dir/pids/$c.pid" ] && ours "$(cat "$dir/pids/$c.pid")"; then
			die "$c of a cluster in $dir is still running: run '$0 down $dir' first"
		fi
	done
	log "building (or finding cached) Kubernetes v$version"
	K8S_BIN=$("$here/k8s-build.sh" "$version") || die "k8s-build.sh failed"
	mkdir -p "$dir/logs" "$dir/pids"
	rm -rf "$dir/etcd" "$dir/pki" "$dir/pids/"*.pid "$dir/env" "$dir/"*.kubeconfig
	: >"$dir/logs/pki.log"

	local ETCD_PORT ETCD_PEER_PORT CONTROLLER_MANAGER_PORT SCHEDULER_PORT
	pick_port ETCD_PORT
	pick_port ETCD_PEER_PORT
	pick_port APISERVER_PORT
	pick_port CONTROLLER_MANAGER_PORT
	pick_port SCHEDULER_PORT
	log "ports: etcd $ETCD_PORT (peer $ETCD_PEER_PORT), apiserver $APISERVER_PORT, controller-manager $CONTROLLER_MANAGER_PORT, scheduler $SCHEDULER_PORT"

	log "making the PKI in $dir/pki"
	make_pki
	local pki=$dir/pki
	kubeconfig "$dir/admin.kubeconfig" banger-test-admin admin
	kubeconfig "$dir/controller-manager.kubeconfig" system:kube-controller-manager controller-manager
	kubeconfig "$dir/scheduler.kubeconfig" system:kube-scheduler scheduler
	{
		printf 'KUBECONFIG=%q\n' "$dir/admin.kubeconfig"
		printf 'KUBECTL=%q\n' "$K8S_BIN/kubectl"
		printf 'APISERVER=%q\n' "https://127.0.0.1:$APISERVER_PORT"
		printf 'CA=%q\n' "$pki/ca.crt"
		printf 'K8S_BIN=%q\n' "$K8S_BIN"
		printf 'K8S_VERSION=%q\n' "$version"
		printf 'ETCD=%q\n' "http://127.0.0.1:$ETCD_PORT"
		printf 'APISERVER_PORT=%s\nETCD_PORT=%s\nETCD_PEER_PORT=%s\n' "$APISERVER_PORT" "$ETCD_PORT" "$ETCD_PEER_PORT"
		printf 'CONTROLLER_MANAGER_PORT=%s\nSCHEDULER_PORT=%s\n' "$CONTROLLER_MANAGER_PORT" "$SCHEDULER_PORT"
	} >"$dir/env"

	log "starting etcd"
	start etcd etcd --name default --data-dir "$dir/etcd" --logger=zap \
		--listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
		--advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
		--listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
		--initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
		--initial-cluster "default=http://127.0.0.1:$ETCD_PEER_PORT"
	wait_ready etcd "etcd /health" sh -c "curl -fsS --max-time 5 http://127.0.0.1:$ETCD_PORT/health | grep -q '\"health\":\"true\"'"

	log "starting kube-apiserver"
	# No --kubelet-certificate-authority: banger kubelets serve their HTTPS
	# API with self-signed certs (as a kubelet without serving-cert
	# bootstrap does), so the apiserver cannot verify them.
	# --kubelet-preferred-address-types=InternalIP: kubelets here all listen
	# on 127.0.0.1 (each on its own port, from the Node's daemonEndpoints),
	# and a node's host name need not resolve.
	# --endpoint-reconciler-type=none: the `kubernetes` Service's endpoints
	# would be 127.0.0.1, which Endpoints refuse; nothing here uses them.
	# Toleration seconds 10 (default 300): pods leave a NotReady node fast.
	start kube-apiserver "$K8S_BIN/kube-apiserver" \
		--bind-address=127.0.0.1 --secure-port="$APISERVER_PORT" \
		--advertise-address=127.0.0.1 --endpoint-reconciler-type=none \
		--etcd-servers="http://127.0.0.1:$ETCD_PORT" \
		--tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
		--client-ca-file="$pki/ca.crt" \
		--requestheader-client-ca-file="$pki/front-proxy-ca.crt" \
		--requestheader-allowed-names=front-proxy-client \
		--requestheader-username-headers=X-Remote-User \
		--requestheader-group-headers=X-Remote-Group \
		--requestheader-extra-headers-prefix=X-Remote-Extra- \
		--proxy-client-cert-file="$pki/front-proxy-client.crt" \
		--proxy-client-key-file="$pki/front-proxy-client.key" \
		--kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" \
		--kubelet-client-key="$pki/apiserver-kubelet-client.key" \
		--kubelet-preferred-address-types=InternalIP \
		--authorization-mode=Node,RBAC \
		--enable-admission-plugins=NodeRestriction \
		--service-cluster-ip-range="$service_range" \
		--service-account-issuer=https://kubernetes.default.svc \
		--service-account-key-file="$pki/sa.pub" \
		--service-account-signing-key-file="$pki/sa.key" \
		--default-not-ready-toleration-seconds=10 \
		--default-unreachable-toleration-seconds=10
	wait_ready kube-apiserver "kube-apiserver /readyz ok" curl_ok --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
		"https://127.0.0.1:$APISERVER_PORT/readyz"

	log "starting kube-controller-manager"
	# Lease-based heartbeats: the virtual-kubelet renews its 40 s Lease
	# every 10 s, so a 20 s grace period (default 50 s) marks a dead node
	# NotReady after two missed renewals. taint-eviction then deletes its
	# pods after the 10 s toleration set on the apiserver above.
	# Only the controllers these tests lean on (the box is small): pods
	# from Deployments, node health and eviction, ServiceAccounts (a pod
	# can't be created without its namespace's), namespace and owner
	# cleanup, and kube-root-ca.crt for projected token volumes.
	local controllers=deployment-controller,replicaset-controller
	controllers+=,node-lifecycle-controller,taint-eviction-controller
	controllers+=,serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller
	controllers+=,namespace-controller,garbage-collector-controller,pod-garbage-collector-controller
	start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
		--bind-address=127.0.0.1 --secure-port="$CONTROLLER_MANAGER_PORT" \
		--kubeconfig="$dir/controller-manager.kubeconfig" \
		--authentication-kubeconfig="$dir/controller-manager.kubeconfig" \
		--authorization-kubeconfig="$dir/controller-manager.kubeconfig" \
		--leader-elect=false \
		--controllers="$controllers" \
		--use-service-account-credentials \
		--service-account-private-key-file="$pki/sa.key" \
		--root-ca-file="$pki/ca.crt" \
		--node-monitor-grace-period=20s --node-monitor-period=2s
	log "starting kube-scheduler"
	start kube-scheduler "$K8S_BIN/kube-scheduler" \
		--bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT" \
		--kubeconfig="$dir/scheduler.kubeconfig" \
		--authentication-kubeconfig="$dir/scheduler.kubeconfig" \
		--authorization-kubeconfig="$dir/scheduler.kubeconfig" \
		--leader-elect=false
	wait_ready kube-controller-manager "kube-controller-manager /healthz ok" curl_ok -k "https://127.0.0.1:$CONTROLLER_MANAGER_PORT/healthz"
	wait_ready kube-scheduler "kube-scheduler /healthz ok" curl_ok -k "https://127.0.0.1:$SCHEDULER_PORT/healthz"

	log "applying the kubelet RBAC"
	apply_rbac || fail kube-apiserver "kubectl apply of the kubelet RBAC failed"
	# Pods can't be created before their namespace's `default`
	# ServiceAccount exists; node Leases need kube-node-lease.
	wait_ready kube-controller-manager "ServiceAccount default/default" kubectl -n default get serviceaccount default
	wait_ready kube-apiserver "namespace kube-node-lease" kubectl get namespace kube-node-lease
	log "up in $((SECONDS - t0))s: source $dir/env"
}

kubelet_config() {
	local node=$1
	[[ "$node" =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$ ]] && [ ${#node} -le 253 ] ||
		die "node name '$node' is not a DNS subdomain (lowercase letters, digits, '-' and '.')"
	[ -f "$dir/env" ] && [ -f "$dir/pki/ca.key" ] || die "no cluster in $dir: run '$0 up $dir' first"
	# shellcheck disable=SC1091
	. "$dir/env"
	sign "kubelet-$node" "/O=system:nodes/CN=system:node:$node" clientAuth
	kubeconfig "$dir/kubelet-$node.kubeconfig" "system:node:$node" "kubelet-$node"
	echo "$dir/kubelet-$node.kubeconfig"
}

# selftest: the node permissions described above the RBAC, asked of the
# live cluster as two nodes; cleans up the objects it creates. Reports
# every surprise, then exits 1 if there was one.
selftest() {
	[ -f "$dir/env" ] || die "no cluster in $dir: run '$0 up $dir' first"
	# shellcheck disable=SC1091
	. "$dir/env"
	local a=selftest-node-a b=selftest-node-b ns=k8s-cluster-selftest bad=0 want args got
	kubelet_config "$a" >/dev/null
	kubelet_config "$b" >/dev/null
	asnode() { "$K8S_BIN/kubectl" --kubeconfig "$dir/kubelet-$a.kubeconfig" --request-timeout 10s "$@"; }
	# want  can-i arguments, as node a
	while read -r want args; do
		[ -n "$want" ] || continue
		# shellcheck disable=SC2086
		got=$(asnode auth can-i $args 2>/dev/null) || true
		if [ "${got%% *}" = "$want" ]; then
			log "selftest: ok   can-i $args: $got"
		else
			log "selftest: FAIL can-i $args: got '$got', want '$want'"
			bad=1
		fi
	done <<EOF
yes create nodes
yes get nodes/$a
yes patch nodes/$a --subresource=status
no  list nodes
no  get nodes/$b
no  delete nodes/$a
yes get leases/$a -n kube-node-lease
yes create leases -n kube-node-lease
yes update leases/$a -n kube-node-lease
no  update leases/$b -n kube-node-lease
no  update leases/$a -n default
yes create events -n default
yes patch events -n default
yes update pods/x --subresource=status -n default
yes delete pods/x -n default
no  list pods -A
no  update pods/x -n default
yes list services -A
yes watch services -A
no  create services -n default
yes list secrets -A
yes watch secrets -A
no  get secrets/x -n default
no  create secrets -n default
yes list configmaps -A
yes watch configmaps -A
no  get configmaps/x -n default
no  update configmaps/x -n default
yes create tokenreviews
yes create subjectaccessreviews
no  list namespaces
EOF
	# The apiserver's kubelet-client identity may use every kubelet API.
	for args in "get nodes/$a --subresource=proxy" "create nodes/$a --subresource=proxy" "get nodes/$a --subresource=log"; do
		# shellcheck disable=SC2086
		got=$(kubectl auth can-i $args --as kube-apiserver-kubelet-client 2>/dev/null) || true
		[ "$got" = yes ] || { log "selftest: kube-apiserver-kubelet-client can-i $args: got '$got', want yes"; bad=1; }
	done

	# Requests, not just can-i: pods only through the node's field selector;
	# all secrets (data included) by list, but not one by name.
	asnode get pods -A --field-selector "spec.nodeName=$a" >/dev/null 2>&1 ||
		{ log "selftest: node cannot list its own pods"; bad=1; }
	! asnode get pods -A >/dev/null 2>&1 ||
		{ log "selftest: node listed every pod"; bad=1; }
	kubectl wait --for=delete "namespace/$ns" --timeout=60s >/dev/null 2>&1 || true # an earlier selftest's
	kubectl create namespace "$ns" >/dev/null
	kubectl -n "$ns" create secret generic s1 --from-literal=k=selftest-value >/dev/null
	got=$(asnode get secrets -A -o jsonpath="{.items[?(@.metadata.name=='s1')].data.k}" 2>&1) || true
	[ "$(echo "$got" | base64 -d 2>/dev/null)" = selftest-value ] ||
		{ log "selftest: list secrets -A as node did not return s1's data (got '$got')"; bad=1; }
	! asnode -n "$ns" get secret s1 >/dev/null 2>&1 ||
		{ log "selftest: node read secret s1 by name without a pod using it"; bad=1; }
	# ...until a pod bound to the node uses it (the Node authorizer's graph).
	kubectl -n "$ns" create -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: uses-s1}
spec:
  nodeName: $a
  automountServiceAccountToken: false
  containers:
  - name: c
    image: busybox
    env: [{name: K, valueFrom: {secretKeyRef: {name: s1, key: k}}}]
EOF
	local t0=$SECONDS
	until asnode -n "$ns" get secret s1 >/dev/null 2>&1; do
		[ $((SECONDS - t0)) -lt 10 ] || { log "selftest: node cannot get secret s1 that its pod uses"; bad=1; break; }
		sleep 0.5
	done
	! asnode -n "$ns" get pod uses-s1 -o name >/dev/null 2>&1 ||
		asnode -n "$ns" delete pod uses-s1 --grace-period=0 --wait=false >/dev/null 2>&1 ||
		{ log "selftest: node cannot read or delete its own pod"; bad=1; }
	# NodeRestriction: a node creates its own Node object, not another's.
	local nodeyaml='{"apiVersion":"v1","kind":"Node","metadata":{"name":"%s"}}'
	# shellcheck disable=SC2059
	! printf "$nodeyaml" "$b" | asnode create -f - >/dev/null 2>&1 ||
		{ log "selftest: node $a created Node $b (is NodeRestriction on?)"; bad=1; }
	# shellcheck disable=SC2059
	printf "$nodeyaml" "$a" | asnode create -f - >/dev/null 2>&1 ||
		{ log "selftest: node $a cannot create its own Node"; bad=1; }
	kubectl delete node "$a" "$b" --ignore-not-found --wait=false >/dev/null
	kubectl delete namespace "$ns" --wait=false >/dev/null
	rm -f "$dir/kubelet-$a.kubeconfig" "$dir/kubelet-$b.kubeconfig" "$dir/pki/kubelet-$a".* "$dir/pki/kubelet-$b".*
	[ "$bad" = 0 ] || die "selftest failed"
	log "selftest ok"
}

down() {
	local c pid pids=() t0=$SECONDS
	[ -d "$dir/pids" ] || return 0
	for c in "${components[@]}"; do
		[ -f "$dir/pids/$c.pid" ] || continue
		pid=$(cat "$dir/pids/$c.pid")
		if ours "$pid"; then
			kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
			pids+=("$pid")
		fi
	done
	for pid in "${pids[@]}"; do
		while ours "$pid"; do
			if [ $((SECONDS - t0)) -ge 20 ]; then
				log "pid $pid ignored SIGTERM for 20s: SIGKILL"
				kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
				sleep 0.2
				break
			fi
			sleep 0.2
		done
	done
	rm -f "$dir/pids/"*.pid
	[ ${#pids[@]} -eq 0 ] || log "stopped ${#pids[@]} processes"
}

[ $# -ge 2 ] || usage
cmd=$1
[ -n "$2" ] || usage
[ "$cmd" != up ] || mkdir -p -- "$2" || die "cannot create $2"
dir=$(realpath -m -- "$2")
case "$cmd" in
up) [ $# -eq 2 ] || usage; up ;;
down) [ $# -eq 2 ] || usage; down ;;
kubelet-config) [ $# -eq 3 ] || usage; kubelet_config "$3" ;;
selftest) [ $# -eq 2 ] || usage; selftest ;;
*) usage ;;
esac
