#!/usr/bin/env bash
# Starts a real single-node Kubernetes on this machine for braid's end-to-end tests:
#   containerd (CRI) -> etcd -> kube-apiserver -> kube-controller-manager + kube-scheduler -> kubelet
# plus a plain bridge + host-local CNI network standing in for the cluster's own CNI (flannel/calico).
#
# Everything lives under $STATE (.cache/cluster): config, certificates, etcd data, containerd root/state,
# kubelet root, logs ($STATE/logs/<component>.log) and PIDs ($STATE/<component>.pid). The few host paths
# the runtime hard-codes (/run/containerd, /var/lib/cni, /var/lib/kubelet, /var/log/{pods,containers}),
# the cgroups kubepods/ and k8s.io/, the kernel sysctls kubelet tunes and the bridge braidclu0 are
# recorded here and undone by cluster-down.sh.
#
# Addresses: the cluster network is IPv6-only on documentation ranges, so no test packet can leak to a
# real network: pods 2001:db8:ff::/64, services 2001:db8:ffff::/112; every control-plane endpoint is on
# loopback (the apiserver on [::1]).
#
# Idempotent: if every component is already running it says so and exits 0; a component that died is
# started again. Needs root. Installs/builds what is missing (install-deps.sh, build-tools.sh, images.sh).
# `cluster-up.sh restart kube-apiserver` stops the running API server and starts it again with the same flags
# (deploy/soak's fault injection).
#
# BRAID_FAKE_PCI=<dir> (used by demo.sh): <dir> is the root of a fake PCI sysfs tree (braid-sriov-fixture),
# and containerd — with it the CNI plugins it runs, such as host-device — sees <dir>/sys/bus/pci/devices at
# /sys/bus/pci/devices, so that simulated SR-IOV VFs look real to them. containerd then runs in a mount
# namespace of its own in which only that bind mount differs: $STATE is made a shared mount first, so the
# mounts containerd and kubelet make under it (volumes, rootfs, pod netns files) are seen on both sides, and
# /sys is made private in containerd's namespace, so the bind mount never reaches the host. cluster-down.sh
# unmounts $STATE like any other mount under it; the namespace ends with the last process in it.
set -euo pipefail
# shellcheck source=env.sh source-path=SCRIPTDIR
source "$(dirname "$0")/env.sh"

HERE=$REPO/deploy/local
LOGS=$STATE/logs
PKI=$STATE/pki
CTRD=$STATE/containerd
CTR_SOCK=$CTRD/containerd.sock
CNI_CONF_DIR=$STATE/cni/net.d
KUBELET_ROOT=$STATE/kubelet

# Cluster network (documentation ranges, see above) and loopback endpoints.
POD_SUBNET=2001:db8:ff::/64
SERVICE_CIDR=2001:db8:ffff::/112
SERVICE_IP=2001:db8:ffff::1 # first service IP: the `kubernetes` Service, must be in the serving cert
BRIDGE=braidclu0
APISERVER_IP=::1
APISERVER_URL=https://[$APISERVER_IP]:$APISERVER_PORT
ETCD_CLIENT_PORT=${ETCD_CLIENT_PORT:-12379}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-12380}
KCM_PORT=10257
SCHEDULER_PORT=10259
PAUSE_IMAGE=registry.k8s.io/pause:3.10

# Components in start order; cluster-down.sh stops them in its own (safe) order.
COMPONENTS=(containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet)
# Host paths the runtime hard-codes outside $STATE. Those absent before the first up are recorded as
# created by the cluster (host/created-dirs), so cluster-down may remove them once it has removed the
# cluster's files from them.
HOST_DIRS=(/run/containerd /var/lib/cni /var/lib/kubelet /var/log/pods /var/log/containers)
# Kernel tunables kubelet sets at start (kubelet's setupKernelTunables); cluster-down restores them.
SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
	kernel.keys.root_maxkeys kernel.keys.root_maxbytes)

T0=$SECONDS
elapsed() { echo "$((SECONDS - T0))s"; }

# ---------------------------------------------------------------------------------------------------
# processes

# pid_of NAME prints the PID of a running component started by this script, or fails. The PID must be
# alive and its command line must mention $STATE, so a recycled PID is never mistaken for ours.
pid_of() {
	local pid
	pid=$(cat "$STATE/$1.pid" 2>/dev/null) || return 1
	[[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$STATE" || return 1
	echo "$pid"
}
alive() { pid_of "$1" >/dev/null; }

# fail NAME MESSAGE reports which component failed with the tail of its log, then exits non-zero.
fail() {
	local name=$1 log=$LOGS/$1.log
	shift
	printf 'error: %s: %s\n' "$name" "$*" >&2
	if [[ -f $log ]]; then
		printf -- '--- last lines of %s ---\n' "$log" >&2
		tail -n 25 "$log" >&2
		printf -- '---\n' >&2
	fi
	printf 'The components that did start keep running: deploy/local/cluster-down.sh stops them.\n' >&2
	exit 1
}

# launch NAME CMD... starts CMD detached (own session, stdin /dev/null, output to its log), so it outlives
# this script and does not hold the caller's pipes open (go test waits for those). The wrapper writes the
# PID of the very process that execs CMD.
launch() {
	local name=$1
	shift
	if alive "$name"; then
		step "$name already running (pid $(pid_of "$name"))"
		return 0
	fi
	step "starting $name (log: ${LOGS#"$REPO"/}/$name.log)"
	rm -f "$STATE/$name.pid"
	# One log per run keeps failure tails relevant; the previous run's log stays next to it.
	if [[ -f $LOGS/$name.log ]]; then mv -f "$LOGS/$name.log" "$LOGS/$name.log.prev"; fi
	# shellcheck disable=SC2016 # $$ and $@ belong to the inner shell
	setsid bash -c 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "$STATE/$name.pid" "$@" \
		</dev/null >"$LOGS/$name.log" 2>&1 &
	local i
	for ((i = 0; i < 50; i++)); do
		[[ -s $STATE/$name.pid ]] && return 0
		sleep 0.1
	done
	fail "$name" "did not start"
}

# launch_supervised NAME CMD... is launch with a restart loop around CMD, as a kubelet restarts its static
# pods or systemd a unit with Restart=always. CMD runs in the loop's process group, so stopping the group
# (cluster-down.sh) ends CMD even when the loop itself had to be SIGKILLed. kube-scheduler exits on purpose when its cache disagrees with
# the API server ("scheduler cache is corrupted", kubernetes/kubernetes#50916; the soak's API server restarts
# and StatefulSet churn provoke it) and counts on being started again. Stopping the loop (SIGTERM) stops CMD.
launch_supervised() {
	local name=$1
	shift
	# shellcheck disable=SC2016 # $child, $rc and $@ belong to the loop's shell
	launch "$name" bash -c '
		trap '"'"'kill -TERM "$child" 2>/dev/null; wait "$child"; exit 0'"'"' TERM INT
		while :; do
			"$@" &
			child=$!
			wait "$child"
			rc=$?
			echo "==> supervisor: ${1##*/} exited with status $rc; starting it again in 1s"
			sleep 1 &
			wait $!
		done' supervise "$@"
}

# wait_until NAME TIMEOUT WHAT CHECK... polls CHECK until it succeeds; fails (naming NAME) if NAME's
# process dies or TIMEOUT seconds pass.
wait_until() {
	local name=$1 timeout=$2 what=$3
	shift 3
	local deadline=$((SECONDS + timeout))
	until "$@" >/dev/null 2>&1; do
		alive "$name" || fail "$name" "exited while waiting for: $what"
		((SECONDS < deadline)) || fail "$name" "not $what after ${timeout}s"
		sleep 0.25
	done
}

# ---------------------------------------------------------------------------------------------------
# prerequisites and host bookkeeping

ensure_prereqs() {
	"$HERE/install-deps.sh"
	local missing=() b
	for b in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet etcd crictl; do
		[[ -x $BIN/$b ]] || missing+=("$b")
	done
	for b in bridge host-local loopback; do
		[[ -x $CNI_BIN/$b ]] || missing+=("cni/$b")
	done
	if [[ ${#missing[@]} -gt 0 ]]; then
		step "missing tools (${missing[*]}): building them"
		"$HERE/build-tools.sh" kubernetes etcd crictl cni
	fi
}

# record_host_state notes, once per cluster lifetime, what the cluster is about to change outside $STATE,
# so that cluster-down undoes exactly that. The records survive a crash and are removed by cluster-down.
#   host/created-dirs    hard-coded runtime dirs that did not exist before (removed on down once
#                        emptied of the cluster's files)
#   host/iptables-ours   no KUBE-* chain existed before, so kubelet's KUBE-FIREWALL, KUBE-KUBELET-CANARY
#                        and KUBE-IPTABLES-HINT chains are ours to delete
#   host/sysctls         the values of the kernel tunables kubelet overwrites
record_host_state() {
	local d s
	mkdir -p "$STATE/host"
	for d in "${HOST_DIRS[@]}"; do
		if [[ ! -e $d ]] && ! grep -qxF "$d" "$STATE/host/created-dirs" 2>/dev/null; then
			echo "$d" >>"$STATE/host/created-dirs"
		fi
	done
	if [[ ! -e $STATE/host/iptables-checked ]]; then
		if ! { iptables-save; ip6tables-save; } 2>/dev/null | grep -q '^:KUBE-'; then
			: >"$STATE/host/iptables-ours"
		fi
		: >"$STATE/host/iptables-checked"
	fi
	if [[ ! -f $STATE/host/sysctls ]]; then
		local v
		for s in "${SYSCTLS[@]}"; do
			v=$(sysctl -n "$s" 2>/dev/null) || continue # absent on this kernel: kubelet cannot set it either
			echo "$s=$v"
		done >"$STATE/host/sysctls"
	fi
}

# ---------------------------------------------------------------------------------------------------
# containerd and CNI

write_cni_conf() {
	mkdir -p "$CNI_CONF_DIR" "$STATE/cni/ipam"
	cat >"$CNI_CONF_DIR/10-cluster.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "braid-cluster",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": false,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_SUBNET"}]],
        "dataDir": "$STATE/cni/ipam"
      }
    }
  ]
}
EOF
}

# write_containerd_config derives the config from `containerd config default`, moving every path under
# $CTRD. Each edit is checked afterwards: a containerd whose defaults changed fails here, not later.
#   restrict_oom_score_adj: this VM lacks CAP_SYS_RESOURCE; without it runc fails to set -998.
#   netns_mounts_under_state_dir: pod netns files live under $CTRD/state, not /var/run/netns.
#   disable_apparmor: no AppArmor here.
write_containerd_config() {
	mkdir -p "$CTRD/root" "$CTRD/state" "$CTRD/runc" "$CTRD/opt"
	containerd config default | sed \
		-e "s#^root = .*#root = \"$CTRD/root\"#" \
		-e "s#^state = .*#state = \"$CTRD/state\"#" \
		-e "s#^  address = \"/run/containerd/containerd.sock\"#  address = \"$CTR_SOCK\"#" \
		-e 's#netns_mounts_under_state_dir = false#netns_mounts_under_state_dir = true#' \
		-e 's#restrict_oom_score_adj = false#restrict_oom_score_adj = true#' \
		-e 's#disable_apparmor = false#disable_apparmor = true#' \
		-e "s#sandbox_image = .*#sandbox_image = \"$PAUSE_IMAGE\"#" \
		-e "s#bin_dir = \"/opt/cni/bin\"#bin_dir = \"$CNI_BIN\"#" \
		-e "s#conf_dir = \"/etc/cni/net.d\"#conf_dir = \"$CNI_CONF_DIR\"#" \
		-e "s#path = \"/opt/containerd\"#path = \"$CTRD/opt\"#" |
		awk -v root="$CTRD/runc" '
			/runtimes\.runc\.options\]/ { inrunc = 1 }
			inrunc && /^ *Root = ""/ { sub(/Root = ""/, "Root = \"" root "\""); inrunc = 0 }
			{ print }' >"$CTRD/config.toml.tmp"
	local want
	for want in "root = \"$CTRD/root\"" "state = \"$CTRD/state\"" "address = \"$CTR_SOCK\"" \
		"netns_mounts_under_state_dir = true" "restrict_oom_score_adj = true" "disable_apparmor = true" \
		"sandbox_image = \"$PAUSE_IMAGE\"" "bin_dir = \"$CNI_BIN\"" "conf_dir = \"$CNI_CONF_DIR\"" \
		"path = \"$CTRD/opt\"" "Root = \"$CTRD/runc\""; do
		grep -qF "$want" "$CTRD/config.toml.tmp" || die "containerd config: could not set '$want'"
	done
	mv "$CTRD/config.toml.tmp" "$CTRD/config.toml"
	cat >"$STATE/crictl.yaml" <<EOF
runtime-endpoint: unix://$CTR_SOCK
image-endpoint: unix://$CTR_SOCK
timeout: 30
EOF
}

# launch_containerd_with_fake_pci starts containerd as BRAID_FAKE_PCI asks (see the top of this file) and
# records the tree in $STATE/containerd.fake-pci, which check_fake_pci compares on the next run.
launch_containerd_with_fake_pci() {
	local devices=$BRAID_FAKE_PCI/sys/bus/pci/devices
	[[ -d $devices ]] || die "BRAID_FAKE_PCI=$BRAID_FAKE_PCI: no $devices (write it with braid-sriov-fixture)"
	if ! mountpoint -q "$STATE"; then mount --bind "$STATE" "$STATE"; fi
	mount --make-shared "$STATE"
	# shellcheck disable=SC2016 # $0 and $@ belong to the inner shell
	launch containerd unshare --mount --propagation unchanged -- sh -c \
		'mount --make-rprivate /sys && mount --bind "$0" /sys/bus/pci/devices && exec "$@"' \
		"$devices" containerd --config "$CTRD/config.toml"
	echo "$BRAID_FAKE_PCI" >"$STATE/containerd.fake-pci"
}

# check_fake_pci refuses to go on with a running containerd that does not see the fake PCI tree asked for
# (or sees one when none is asked for): only a restart of the cluster can change what it sees.
check_fake_pci() {
	alive containerd || { rm -f "$STATE/containerd.fake-pci"; return 0; }
	local running
	running=$(cat "$STATE/containerd.fake-pci" 2>/dev/null || true)
	if [[ $running != "${BRAID_FAKE_PCI:-}" ]]; then
		die "containerd runs with BRAID_FAKE_PCI='$running', asked for '${BRAID_FAKE_PCI:-}': stop the cluster first (deploy/local/cluster-down.sh)"
	fi
}

start_containerd() {
	write_cni_conf
	write_containerd_config
	if [[ -n ${BRAID_FAKE_PCI:-} ]]; then
		launch_containerd_with_fake_pci
	else
		launch containerd containerd --config "$CTRD/config.toml"
	fi
	wait_until containerd 30 "serving on $CTR_SOCK" ctr --address "$CTR_SOCK" version
	# Builds the images if needed (cached by content) and imports them into this containerd.
	"$HERE/images.sh" || fail containerd "importing images failed"
	step "containerd ready with images ($(elapsed))"
}

# ---------------------------------------------------------------------------------------------------
# certificates and kubeconfigs (openssl only; ECDSA P-256 keys are instant to generate)

# sign NAME SUBJECT EXTENSIONS issues $PKI/NAME.{key,crt} signed by the cluster CA.
sign() {
	local name=$1 subj=$2 ext=$3
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/$name.key" 2>/dev/null
	openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
	printf '%b\n' "$ext" >"$PKI/$name.ext"
	openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
		-days 365 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
	rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

# kubeconfig NAME writes $STATE/NAME.kubeconfig authenticating with $PKI/NAME.{crt,key}.
kubeconfig() {
	cat >"$STATE/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: braid-local
  cluster: {server: "$APISERVER_URL", certificate-authority: "$PKI/ca.crt"}
users:
- name: $1
  user: {client-certificate: "$PKI/$1.crt", client-key: "$PKI/$1.key"}
contexts:
- name: braid-local
  context: {cluster: braid-local, user: $1}
current-context: braid-local
EOF
}

make_certs() {
	if [[ -f $PKI/.complete ]]; then
		return 0
	fi
	step "creating certificates in ${PKI#"$REPO"/}"
	rm -rf "$PKI"
	mkdir -p "$PKI"
	chmod 0700 "$PKI"
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/ca.key" 2>/dev/null
	openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=braid-local-ca" -days 3650 -out "$PKI/ca.crt" 2>/dev/null
	local client="keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth"
	sign apiserver "/CN=kube-apiserver" "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth
subjectAltName=IP:::1,IP:127.0.0.1,IP:$SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
	sign kubelet-serving "/CN=$NODE_NAME" "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth
subjectAltName=IP:::1,IP:127.0.0.1,DNS:localhost,DNS:$NODE_NAME"
	sign admin "/O=system:masters/CN=braid-admin" "$client"
	sign kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" "$client"
	sign controller-manager "/CN=system:kube-controller-manager" "$client"
	sign scheduler "/CN=system:kube-scheduler" "$client"
	# The apiserver's client identity towards kubelets (kubelet authorizes with AlwaysAllow).
	sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client"
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/sa.key" 2>/dev/null
	openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
	local k
	for k in admin kubelet controller-manager scheduler; do kubeconfig "$k"; done
	: >"$PKI/.complete"
}

# ---------------------------------------------------------------------------------------------------
# control plane

etcd_healthy() {
	local reply
	reply=$(
		exec 3<>"/dev/tcp/127.0.0.1/$ETCD_CLIENT_PORT"
		printf 'GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
		cat <&3
	) 2>/dev/null || return 1
	[[ $reply == *'"health":"true"'* ]]
}

# kubectl_admin runs kubectl as cluster admin; the timeout keeps a wedged apiserver from stalling a wait.
kubectl_admin() { kubectl --kubeconfig "$KUBECONFIG_ADMIN" --request-timeout 5s "$@"; }

# healthz PORT asks a component's secure port for /healthz, which is always allowed without credentials.
# openssl (a dependency anyway) is the HTTPS client: kubectl would prompt for a username.
healthz() {
	local body
	body=$(printf 'GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n' |
		timeout 5 openssl s_client -quiet -ign_eof -connect "127.0.0.1:$1" 2>/dev/null | tail -n 1)
	[[ $body == ok ]]
}

start_etcd() {
	mkdir -p "$STATE/etcd-data"
	# Loopback only; fsync off: the data is disposable and fsync dominates etcd latency on this disk.
	launch etcd "$BIN/etcd" --name braid-local --data-dir "$STATE/etcd-data" \
		--listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
		--advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
		--listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
		--initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
		--initial-cluster "braid-local=http://127.0.0.1:$ETCD_PEER_PORT" \
		--unsafe-no-fsync --log-level warn
	wait_until etcd 30 healthy etcd_healthy
	step "etcd ready ($(elapsed))"
}

# The kubelet is reached on its InternalIP: the default tries the node name first, a DNS query leaving
# the machine. No Endpoints for the `kubernetes` Service (--endpoint-reconciler-type none): the only
# address to publish would be loopback, which Endpoints validation rejects, and no kube-proxy runs anyway.
start_apiserver() {
	launch kube-apiserver "$BIN/kube-apiserver" \
		--etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" \
		--bind-address "$APISERVER_IP" --advertise-address "$APISERVER_IP" --secure-port "$APISERVER_PORT" \
		--cert-dir "$PKI" --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
		--client-ca-file "$PKI/ca.crt" \
		--kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
		--kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
		--kubelet-preferred-address-types InternalIP \
		--service-account-issuer https://kubernetes.default.svc.cluster.local \
		--service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
		--service-cluster-ip-range "$SERVICE_CIDR" \
		--authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
		--endpoint-reconciler-type none \
		--allow-privileged=true
	wait_until kube-apiserver 90 ready kubectl_admin get --raw /readyz
	step "kube-apiserver ready on $APISERVER_URL ($(elapsed))"
}

start_controllers() {
	local kc=$STATE/controller-manager.kubeconfig sc=$STATE/scheduler.kubeconfig
	launch_supervised kube-controller-manager "$BIN/kube-controller-manager" \
		--kubeconfig "$kc" --authentication-kubeconfig "$kc" --authorization-kubeconfig "$kc" \
		--bind-address 127.0.0.1 --secure-port "$KCM_PORT" --cert-dir "$PKI/controller-manager" \
		--leader-elect=false --use-service-account-credentials \
		--service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
		--cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
		--service-cluster-ip-range "$SERVICE_CIDR"
	launch_supervised kube-scheduler "$BIN/kube-scheduler" \
		--kubeconfig "$sc" --authentication-kubeconfig "$sc" --authorization-kubeconfig "$sc" \
		--bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" --cert-dir "$PKI/scheduler" \
		--leader-elect=false
	wait_until kube-controller-manager 60 healthy healthz "$KCM_PORT"
	wait_until kube-scheduler 60 healthy healthz "$SCHEDULER_PORT"
	step "kube-controller-manager and kube-scheduler healthy ($(elapsed))"
}

# ---------------------------------------------------------------------------------------------------
# kubelet

# node_ip prints the address kubelet would report as the node's InternalIP anyway: the source address of
# the default route (looked up, not contacted). kubelet serves on it so that the apiserver reaches it for
# `kubectl logs/exec`; kubelet refuses a loopback node IP. Empty without a default route.
node_ip() {
	{ ip -o route get 203.0.113.1 2>/dev/null || true; } | grep -o 'src [^ ]*' | cut -d' ' -f2 || true
}

# write_kubelet_config IP writes the kubelet config, serving on IP.
write_kubelet_config() {
	mkdir -p "$KUBELET_ROOT" "$STATE/pod-logs" "$STATE/static-pods"
	# cgroupfs + failCgroupV1=false: this VM has cgroup v1 and PID 1 is not systemd. The high image-GC
	# threshold keeps kubelet from deleting the hand-imported images; no DNS: none runs here.
	cat >"$STATE/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failCgroupV1: false
containerRuntimeEndpoint: unix://$CTR_SOCK
address: $1
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: "$PKI/ca.crt"}
authorization: {mode: AlwaysAllow}
tlsCertFile: "$PKI/kubelet-serving.crt"
tlsPrivateKeyFile: "$PKI/kubelet-serving.key"
failSwapOn: false
podLogsDir: "$STATE/pod-logs"
staticPodPath: "$STATE/static-pods"
resolvConf: ""
clusterDNS: []
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"}
serializeImagePulls: false
localStorageCapacityIsolation: false
EOF
}

# node_ready SINCE: the node is Ready according to a heartbeat at or after SINCE (RFC 3339, UTC). The
# heartbeat check matters on a restart: etcd still holds the last run's (stale) Ready condition.
node_ready() {
	local ready
	ready=$(kubectl_admin get node "$NODE_NAME" -o jsonpath='{range .status.conditions[?(@.type=="Ready")]}{.status} {.lastHeartbeatTime}{end}')
	[[ ${ready%% *} == True && ! ${ready#* } < $1 ]]
}

# node_schedulable: kubelet registers the node tainted not-ready; the node-lifecycle controller lifts
# the taint once Ready. Waiting for it makes the cluster usable the moment this script returns.
node_schedulable() {
	[[ -z $(kubectl_admin get node "$NODE_NAME" -o jsonpath='{.spec.taints}') ]]
}

start_kubelet() {
	local ip args=()
	ip=$(node_ip)
	if [[ -n $ip ]]; then
		args+=(--node-ip "$ip")
	else
		ip=127.0.0.1
		step "warning: no default route: kubelet serves on loopback, so 'kubectl logs/exec' will not work"
	fi
	write_kubelet_config "$ip"
	# A freshly started kubelet must post a new heartbeat (see node_ready); a running one posts only on
	# change or every 5 minutes, so its current status is taken as is.
	local since=""
	alive kubelet || since=$(date -u +%Y-%m-%dT%H:%M:%SZ)
	# Supervised like a node's systemd unit (Restart=always): kubelet exits on some errors and expects to
	# be started again.
	launch_supervised kubelet "$BIN/kubelet" --config "$STATE/kubelet-config.yaml" \
		--kubeconfig "$STATE/kubelet.kubeconfig" --root-dir "$KUBELET_ROOT" \
		--hostname-override "$NODE_NAME" "${args[@]}"
	wait_until kubelet 60 registered kubectl_admin get node "$NODE_NAME"
	wait_until kubelet 90 Ready node_ready "$since"
	wait_until kube-controller-manager 60 "untainting node $NODE_NAME" node_schedulable
	# Pods need the default ServiceAccount, made by the controller-manager's serviceaccount controller.
	wait_until kube-controller-manager 60 "creating ServiceAccount default/default" \
		kubectl_admin -n default get serviceaccount default
	step "node $NODE_NAME Ready ($(elapsed))"
}

# ---------------------------------------------------------------------------------------------------

all_alive() {
	local c
	for c in "${COMPONENTS[@]}"; do alive "$c" || return 1; done
}

# restart NAME stops one running component and starts it again with the flags it was started with (the
# soak test's fault injection: `cluster-up.sh restart kube-apiserver`). Only the API server for now.
restart() {
	local name=${1:-} pid i
	[[ $name == kube-apiserver ]] || die "usage: cluster-up.sh restart kube-apiserver (got '$name')"
	pid=$(pid_of "$name") || die "restart: $name is not running: start the cluster first (cluster-up.sh)"
	step "stopping $name (pid $pid)"
	kill -TERM "$pid"
	# Gone or a zombie (exited, not yet reaped): either way it no longer serves. It stops listening at once
	# but may linger much longer before it exits.
	for ((i = 0; i < 150; i++)); do alive "$name" || break; sleep 0.1; done
	if alive "$name"; then
		step "$name still running 15s after SIGTERM: SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
		for ((i = 0; i < 50; i++)); do alive "$name" || break; sleep 0.1; done
	fi
	start_apiserver
}

main() {
	[[ $(id -u) -eq 0 ]] || die "cluster-up.sh must run as root (containerd, kubelet and CNI need it)"
	if [[ ${1:-} == restart ]]; then
		restart "${2:-}"
		return
	fi
	if [[ -n ${BRAID_FAKE_PCI:-} ]]; then check_fake_pci; fi
	if all_alive && kubectl_admin get --raw /readyz >/dev/null 2>&1; then
		step "local cluster already up (kubeconfig: $KUBECONFIG_ADMIN)"
		return 0
	fi
	ensure_prereqs
	mkdir -p "$STATE" "$LOGS"
	record_host_state
	start_containerd
	make_certs
	start_etcd
	start_apiserver
	start_controllers
	start_kubelet
	step "local cluster up in $(elapsed): export KUBECONFIG=$KUBECONFIG_ADMIN"
}

main "$@"
