# Kubernetes schedules pods onto two banger hosts (issue 17): a real
# control plane (kube-apiserver, controller-manager, scheduler built from
# the Go module proxy, Debian's etcd; scripts/k8s-cluster.sh) on the root
# namespace's loopback; host A is this run's daemon, host B a second daemon
# in its own namespace with a copy of the same state; each has its own
# `banger kubelet` (in the root namespace: it reaches its daemon through
# the socket and the API server on loopback). Asserts: both nodes Ready with
# their capacity; a busybox pod Running, its logs, exec, delete (no VM
# left); a 4-replica Deployment spread over both nodes; a pod too big for
# any node Pending with the scheduler's reason; exit 3 with restartPolicy
# Never is Failed/3; a kubelet restart loses and duplicates nothing; host
# B's kubelet and daemon killed -> node NotReady, its pods come up on A.
CLASS=global
COST=600
# A cold control-plane build takes ~16 min on 2 cores (cached after).
TIMEOUT=3000

K8S_DIR= NS_B= SOCK_B= KUBECONFIG= NODE_A= NODE_B=

k() { "$KUBECTL" --kubeconfig "$KUBECONFIG" "$@"; }
bgb() { "$BANGER" --socket "$SOCK_B" "$@"; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_kubelet() { # name socket port kubeconfig [extra...]
	local name=$1 sock=$2 port=$3 kc=$4
	shift 4
	setsid "$BANGER" --socket "$sock" kubelet --kubeconfig "$kc" --node-name "$name" \
		--listen "127.0.0.1:$port" --node-ip 127.0.0.1 "$@" >>"$WORK/kubelet-$name.log" 2>&1 &
	echo $! >"$WORK/kubelet-$name.pid"
}

stop_kubelet() {
	local pid
	pid=$(cat "$WORK/kubelet-$1.pid" 2>/dev/null) || return 0
	kill -TERM "$pid" 2>/dev/null
	for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
	kill -KILL "$pid" 2>/dev/null
	return 0
}

# k8s_exit: the scenario's EXIT trap: the cluster, host B and the kubelets
# go, then lib.sh's own cleanup runs with the scenario's status.
k8s_exit() {
	local rc=$?
	k8s_cleanup
	(exit $rc)
	cleanup_tracked
}

k8s_cleanup() {
	set +e
	[[ -z $KUBECONFIG ]] || k delete deployment --all --wait=false >/dev/null 2>&1
	stop_kubelet "$NODE_A"
	stop_kubelet "$NODE_B"
	if [[ -n $NS_B ]]; then
		ip netns pids "$NS_B" 2>/dev/null | xargs -r kill -KILL 2>/dev/null
		sleep 0.5
		ip netns del "$NS_B" 2>/dev/null
	fi
	# This node's VMs on host A (the run's daemon outlives the scenario).
	for v in $(bg vm ls -a -q --filter "label=banger.dev/node=$NODE_A" 2>/dev/null); do bg vm rm -f "$v" >/dev/null 2>&1; done
	[[ -z $K8S_DIR ]] || "$SMOKE_DIR/../scripts/k8s-cluster.sh" down "$K8S_DIR" >/dev/null 2>&1
}

# vms_on HOST-BANGER-FN NODE: the VMs of the node on that host, one name a line.
vms_on() { "$1" vm ls -a -q --filter "label=banger.dev/node=$2" 2>/dev/null; }

wait_phase() { # pod phase seconds
	local i ph
	for i in $(seq 1 "$3"); do
		ph=$(k get pod "$1" -o 'jsonpath={.status.phase}' 2>/dev/null) || true
		[[ $ph == "$2" ]] && return 0
		sleep 1
	done
	echo "pod $1 is ${ph:-absent}, not $2, after $3 s" >&2
	k describe pod "$1" >&2 2>/dev/null | tail -25
	return 1
}

pod_yaml() { # name command restartPolicy [memory]
	cat <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $1}
spec:
  restartPolicy: $3
  automountServiceAccountToken: false
  tolerations: [{key: banger.dev/microvm, operator: Exists, effect: NoSchedule}]
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "$2"]
    resources: {limits: {memory: ${4:-128Mi}}}
EOF
}

deployment_yaml() { # name replicas memory command
	cat <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: $1}
spec:
  replicas: $2
  selector: {matchLabels: {app: $1}}
  template:
    metadata: {labels: {app: $1}}
    spec:
      automountServiceAccountToken: false
      tolerations: [{key: banger.dev/microvm, operator: Exists, effect: NoSchedule}]
      containers:
      - name: main
        image: busybox
        command: ["sh", "-c", "$4"]
        resources: {limits: {memory: $3}}
EOF
}

bench_pods() { # N: a Deployment of N pods, timed from apply to all Running
	local t0 n=0 i
	step "bench: a Deployment of $1 pods"
	t0=$(date +%s.%N)
	deployment_yaml bench "$1" 128Mi "sleep 3600" | k apply -f - >/dev/null || fail "apply deployment bench"
	for i in $(seq 1 900); do
		n=$(k get pods -l app=bench --field-selector status.phase=Running -o name 2>/dev/null | wc -l) || true
		((n >= $1)) && break
		sleep 1
	done
	((n >= $1)) || fail "only $n of $1 bench pods Running after 900 s"
	step "figure: $1 pods over two nodes all Running after $(echo "$(date +%s.%N) - $t0" | bc)s ($(k get pods -l app=bench --field-selector "spec.nodeName=$NODE_A,status.phase=Running" -o name | wc -l) on A; $(k get pods -l app=bench --field-selector status.phase=Failed -o name | wc -l) failed and replaced by the ReplicaSet)"
	k delete deployment bench --wait=false >/dev/null
	for i in $(seq 1 300); do
		[[ -z $(k get pods -l app=bench -o name 2>/dev/null) ]] && break
		sleep 1
	done
}

run() {
	local t0 t1 i ready n a na nb vm rel podrun boot out memk msg host reason
	NODE_A=banger-a-$RUN NODE_B=banger-b-$RUN
	trap k8s_exit EXIT

	step "control plane (scripts/k8s-cluster.sh up; builds v1.37.2 once, cached)"
	K8S_DIR=$WORK/k8s
	"$SMOKE_DIR/../scripts/k8s-cluster.sh" up "$K8S_DIR" || fail "control plane did not come up"
	# shellcheck disable=SC1091
	source "$K8S_DIR/env"
	export KUBECONFIG KUBECTL
	"$SMOKE_DIR/../scripts/k8s-cluster.sh" selftest "$K8S_DIR" >/dev/null || fail "k8s-cluster selftest (the node RBAC) failed"
	"$SMOKE_DIR/../scripts/k8s-cluster.sh" kubelet-config "$K8S_DIR" "$NODE_A" || fail "kubelet-config $NODE_A"
	"$SMOKE_DIR/../scripts/k8s-cluster.sh" kubelet-config "$K8S_DIR" "$NODE_B" || fail "kubelet-config $NODE_B"

	step "host B: a second daemon in its own namespace ($NODE_B)"
	NS_B=bsmk-$RUN-b
	ip netns add "$NS_B" || fail "ip netns add $NS_B"
	ip netns exec "$NS_B" ip link set lo up
	mkdir -p "$WORK/b/run"
	snapshot_restore "$WORK/b/state" || fail "copy the state snapshot for host B"
	SOCK_B=$WORK/b/run/banger.sock
	setsid ip netns exec "$NS_B" "$BANGER" daemon --state-dir "$WORK/b/state" --runtime-dir "$WORK/b/run" \
		--bridge-ip 172.31.0.1/24 >>"$WORK/daemon-b.log" 2>&1 &
	echo $! >"$WORK/daemon-b.pid"
	for i in $(seq 1 100); do bgb version 2>/dev/null | grep -qi daemon && break; sleep 0.2; done
	bgb version | grep -qi daemon || fail "daemon B did not answer: $(tail -5 "$WORK/daemon-b.log")"

	step "a banger kubelet per host"
	PORT_A=$(free_port) PORT_B=$(free_port)
	start_kubelet "$NODE_A" "$SOCK" "$PORT_A" "$K8S_DIR/kubelet-$NODE_A.kubeconfig"
	start_kubelet "$NODE_B" "$SOCK_B" "$PORT_B" "$K8S_DIR/kubelet-$NODE_B.kubeconfig" --nat=false
	for n in "$NODE_A" "$NODE_B"; do
		for i in $(seq 1 60); do k get node "$n" >/dev/null 2>&1 && break; sleep 1; done
		k wait --for=condition=Ready "node/$n" --timeout=120s >/dev/null ||
			fail "node $n not Ready: $(k get node "$n" -o wide 2>&1); kubelet log: $(tail -20 "$WORK/kubelet-$n.log")"
	done
	out=$(k get nodes -o wide)
	step "$out"
	memk=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
	assert_eq "${memk}Ki" "$(k get node "$NODE_A" -o 'jsonpath={.status.capacity.memory}')" "node A's memory capacity (the host's MemTotal)"
	assert_eq "$(nproc)" "$(k get node "$NODE_B" -o 'jsonpath={.status.capacity.cpu}')" "node B's cpu capacity"
	assert_contains "$(k get node "$NODE_A" -o 'jsonpath={.spec.taints}')" "banger.dev/microvm" "node A's taint"
	# The kubelet API answers only the API server's client certificate.
	assert_eq 401 "$(curl -sk -o /dev/null -w '%{http_code}' "https://127.0.0.1:$PORT_A/containerLogs/default/x/main")" "an anonymous request to kubelet A's API"
	# Another node's certificate (same CA) is authenticated, then refused by
	# the SubjectAccessReview: a node may not reach another node's pods.
	assert_eq 403 "$(curl -sk -o /dev/null -w '%{http_code}' --cert "$K8S_DIR/pki/kubelet-$NODE_B.crt" --key "$K8S_DIR/pki/kubelet-$NODE_B.key" "https://127.0.0.1:$PORT_A/containerLogs/default/x/main")" "node B's certificate at kubelet A's API"

	step "a pod: echo hello; sleep 3600"
	t0=$(date +%s.%N)
	# It ignores SIGTERM: a poweroff waits for it (banger-init: TERM, 3 s,
	# KILL), which is longer than the 1 s grace period the delete gives.
	pod_yaml hello "trap '' TERM; echo hello; while :; do sleep 1; done" Never | k apply -f - >/dev/null || fail "apply pod hello"
	wait_phase hello Running 240 || fail "pod hello not Running"
	t1=$(date +%s.%N)
	podrun=$(echo "$t1 - $t0" | bc)
	step "pod create -> Running: ${podrun}s"
	for i in $(seq 1 30); do k logs hello 2>/dev/null | grep -q '^hello' && break; sleep 1; done
	assert_contains "$(k logs hello)" "hello" "kubectl logs hello"
	assert_contains "$(k logs --tail=1 hello)" "hello" "kubectl logs --tail=1 hello"
	n=$(k get pod hello -o 'jsonpath={.spec.nodeName}')
	host=bgb
	[[ $n != "$NODE_A" ]] || host=bg
	vm=$(vms_on $host "$n")
	[[ -n $vm ]] || fail "no VM labelled for pod hello on $n"
	rel=$($host vm exec "$vm" -- uname -r)
	assert_eq "$rel" "$(k exec hello -- uname -r)" "kubectl exec hello -- uname -r (the guest kernel's release)"
	assert_eq "$($host vm inspect "$vm" -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["guest_ip"])')" \
		"$(k get pod hello -o 'jsonpath={.status.podIP}')" "pod IP = guest IP"
	assert_eq "code=7" "$(k exec hello -- sh -c 'exit 7' >/dev/null 2>&1; echo "code=$?")" "kubectl exec exit status"
	# -it: a terminal in the guest (script(1) gives kubectl a pty).
	out=$(script -qec "$KUBECTL --kubeconfig $KUBECONFIG exec -it hello -- sh -c 'tty; stty size'" /dev/null | tr -d '\r')
	assert_match "$out" "/dev/pts/[0-9]+" "kubectl exec -it: tty in the guest"
	# -f: what is there, then it keeps streaming until it is stopped.
	capture timeout 5 "$KUBECTL" --kubeconfig "$KUBECONFIG" logs -f hello
	assert_eq 124 "$RC" "kubectl logs -f still following after 5 s"
	assert_contains "$OUT" "hello" "kubectl logs -f hello"
	step "kubectl delete pod hello --grace-period=1 (its main ignores TERM: the poweroff takes longer, so it is forced)"
	k delete pod hello --grace-period=1 --timeout=120s >/dev/null || fail "delete pod hello"
	assert_contains "$(k get events --field-selector involvedObject.name=hello -o 'jsonpath={.items[*].message}')" "did not power off within 1s" "the grace period, honoured"
	assert_eq "" "$(vms_on bg "$NODE_A")$(vms_on bgb "$NODE_B")" "VMs left after kubectl delete pod"

	step "bare banger vm create on host A, same run, for comparison"
	t0=$(date +%s.%N)
	bg vm create --name "cmp-$RUN" --image busybox --memory 128 >/dev/null || fail "vm create cmp"
	t1=$(date +%s.%N)
	boot=$(echo "$t1 - $t0" | bc)
	bg vm rm -f "cmp-$RUN" >/dev/null
	step "figure: pod create -> Running ${podrun}s; banger vm create -> ready ${boot}s"

	step "a pod asking for more memory than any node has stays Pending"
	pod_yaml huge "sleep 1" Never 100000Gi | k apply -f - >/dev/null
	for i in $(seq 1 60); do
		msg=$(k get pod huge -o 'jsonpath={.status.conditions[?(@.type=="PodScheduled")].message}' 2>/dev/null) || true
		[[ $msg == *Insufficient\ memory* ]] && break
		sleep 1
	done
	assert_contains "$msg" "Insufficient memory" "huge pod's PodScheduled message"
	assert_eq Pending "$(k get pod huge -o 'jsonpath={.status.phase}')" "huge pod phase"
	k delete pod huge --wait=false >/dev/null

	step "a pod with two containers is refused, naming why"
	cat <<EOF | k apply -f - >/dev/null || fail "apply pod two"
apiVersion: v1
kind: Pod
metadata: {name: two}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  tolerations: [{key: banger.dev/microvm, operator: Exists, effect: NoSchedule}]
  containers:
  - {name: a, image: busybox, command: ["sleep", "60"]}
  - {name: b, image: busybox, command: ["sleep", "60"]}
EOF
	wait_phase two Failed 120 || fail "pod two not Failed"
	assert_contains "$(k get pod two -o 'jsonpath={.status.reason}: {.status.message}')" "ProviderFailed: pod default/two has 2 containers" "pod two's status"
	k delete pod two --wait=false >/dev/null

	step "a pod whose main process exits 3, restartPolicy Never"
	pod_yaml three "exit 3" Never | k apply -f - >/dev/null
	wait_phase three Failed 240 || fail "pod three not Failed"
	assert_eq 3 "$(k get pod three -o 'jsonpath={.status.containerStatuses[0].state.terminated.exitCode}')" "pod three's exit code"
	k delete pod three --timeout=120s >/dev/null

	step "a pod whose image does not exist, restartPolicy Always: Pending in ImagePullBackOff, retried, then deleted"
	cat <<EOF | k apply -f - >/dev/null || fail "apply pod noimage"
apiVersion: v1
kind: Pod
metadata: {name: noimage}
spec:
  nodeSelector: {kubernetes.io/hostname: $NODE_A}
  automountServiceAccountToken: false
  tolerations: [{key: banger.dev/microvm, operator: Exists, effect: NoSchedule}]
  containers:
  - {name: main, image: "127.0.0.1:5000/smoke/none-$RUN:v1", command: ["true"]}
EOF
	for i in $(seq 1 120); do
		reason=$(k get pod noimage -o 'jsonpath={.status.containerStatuses[0].state.waiting.reason}' 2>/dev/null) || true
		[[ $reason == ImagePullBackOff ]] && break
		sleep 1
	done
	assert_eq ImagePullBackOff "$reason" "pod noimage's waiting reason"
	assert_eq Pending "$(k get pod noimage -o 'jsonpath={.status.phase}')" "pod noimage's phase"
	k delete pod noimage --timeout=120s >/dev/null || fail "delete pod noimage"
	for i in $(seq 1 30); do [[ -z $(vms_on bg "$NODE_A") ]] && break; sleep 1; done
	assert_eq "" "$(vms_on bg "$NODE_A")" "VMs left by the pod that never got its image"

	step "a Deployment of 4 replicas, 256Mi each"
	deployment_yaml web 4 256Mi "echo up; sleep 3600" | k apply -f - >/dev/null || fail "apply deployment"
	k rollout status deployment/web --timeout=600s >/dev/null || fail "deployment web not available: $(k get pods -o wide)"
	out=$(k get pods -l app=web -o wide)
	step "$out"
	na=$(k get pods -l app=web --field-selector "spec.nodeName=$NODE_A" -o name | wc -l)
	nb=$(k get pods -l app=web --field-selector "spec.nodeName=$NODE_B" -o name | wc -l)
	((na >= 1 && nb >= 1)) || fail "replicas not spread: $na on A, $nb on B"
	assert_eq "$na" "$(vms_on bg "$NODE_A" | wc -l)" "VMs on host A = its pods"
	assert_eq "$nb" "$(vms_on bgb "$NODE_B" | wc -l)" "VMs on host B = its pods"

	step "restart kubelet A while its pods run"
	a=$(vms_on bg "$NODE_A" | sort)
	stop_kubelet "$NODE_A"
	start_kubelet "$NODE_A" "$SOCK" "$PORT_A" "$K8S_DIR/kubelet-$NODE_A.kubeconfig"
	# Its second "ready" line: the restarted kubelet's.
	for i in $(seq 1 60); do [[ $(grep -c "node $NODE_A ready" "$WORK/kubelet-$NODE_A.log") -ge 2 ]] && break; sleep 1; done
	sleep 5
	k wait --for=condition=Ready "node/$NODE_A" --timeout=120s >/dev/null || fail "node A not Ready after kubelet restart"
	assert_eq "$a" "$(vms_on bg "$NODE_A" | sort)" "host A's VMs after the kubelet restart (none lost, none added)"
	assert_eq "$na" "$(k get pods -l app=web --field-selector "spec.nodeName=$NODE_A,status.phase=Running" -o name | wc -l)" "pods Running on A after the kubelet restart"
	assert_contains "$(cat "$WORK/kubelet-$NODE_A.log")" "matched to their pods again" "kubelet A adopted its VMs"

	step "SIGKILL daemon A and start it again while its pods run"
	kill -KILL "$(bg version | sed -n 's/.*daemon .*(pid \([0-9]*\).*/\1/p')"
	sleep 1
	start_daemon || fail "daemon A did not come back: $(tail -20 "$WORK/daemon.log")"
	assert_eq "$a" "$(vms_on bg "$NODE_A" | sort)" "host A's VMs after the daemon restart"
	n=$(k get pods -l app=web --field-selector "spec.nodeName=$NODE_A" -o 'jsonpath={.items[0].metadata.name}')
	assert_eq ok "$(k exec "$n" -- echo ok)" "kubectl exec into $n after the daemon restart"
	assert_eq "$na" "$(k get pods -l app=web --field-selector "spec.nodeName=$NODE_A,status.phase=Running" -o name | wc -l)" "pods Running on A after the daemon restart"

	# scripts/bench.sh k8s: N more pods over both nodes, timed to all Running.
	[[ -z ${K8S_BENCH_PODS:-} ]] || bench_pods "$K8S_BENCH_PODS"

	step "kill host B's kubelet and daemon"
	kill -KILL "$(cat "$WORK/kubelet-$NODE_B.pid")"
	ip netns pids "$NS_B" | xargs -r kill -KILL
	for i in $(seq 1 120); do
		ready=$(k get node "$NODE_B" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) || true
		[[ $ready != True ]] && break
		sleep 1
	done
	[[ $ready != True ]] || fail "node B still Ready 120 s after its kubelet died"
	step "node B Ready=$ready after ${i}s"
	for i in $(seq 1 300); do
		n=$(k get pods -l app=web --field-selector "spec.nodeName=$NODE_A,status.phase=Running" -o name 2>/dev/null | wc -l) || true
		((n >= 4)) && break
		sleep 2
	done
	((n >= 4)) || fail "only $n of 4 web pods Running on A after B died: $(k get pods -o wide)"
	step "all 4 replicas Running on $NODE_A"

	step "delete the Deployment: no VM left on A"
	k delete deployment web --timeout=120s >/dev/null
	for i in $(seq 1 120); do [[ -z $(vms_on bg "$NODE_A") ]] && break; sleep 1; done
	assert_eq "" "$(vms_on bg "$NODE_A")" "host A's VMs after the Deployment is gone"
}
