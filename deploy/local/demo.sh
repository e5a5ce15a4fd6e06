#!/usr/bin/env bash
# `make demo`: braid on a real single-node Kubernetes whose node has three underlay networks, from a fresh clone.
#
#   demo.sh          build; simulate the node's NICs; start the cluster; install braid from deploy/ with kubectl;
#                    apply deploy/examples; print what each pod got and prove the networks work and stay apart.
#                    Leaves everything running.
#   demo.sh report   the report and the proofs again, on the running demo
#   demo.sh down     remove the examples and braid, stop the cluster, remove the simulated underlay
#
# The simulated underlay (deploy/local/demo, `braid-demo underlay`): the node's NICs mgmt0 and ctl0 (macvlan
# parents) and vf0..vf2 (the netdevs of three SR-IOV VFs) are veth ends whose peers are ports of one switch per
# network (netns braid-sw-<net>, a bridge), each with a peer host (netns braid-peer-<net>: 192.0.2.254,
# 198.51.100.254 + 2001:db8:1::fe, 203.0.113.254). The VFs exist in a fake PCI tree (braid-sriov-fixture) that
# braid-sriov-dp reads and that containerd — so host-device — sees at /sys/bus/pci/devices (cluster-up.sh's
# BRAID_FAKE_PCI). braid-ipam's default kubeconfig, /etc/cni/net.d/braid.d/braid.kubeconfig, is a link to the
# one braid's installer writes in the cluster's conf dir; `down` removes it with the rest.
#
# Everything else stays under .cache/ (demo/ here, cluster/ for the cluster). Needs root; run it under the
# cluster lock, as `make demo` and `make demo-down` do.
set -euo pipefail
# shellcheck source=env.sh source-path=SCRIPTDIR
source "$(dirname "$0")/env.sh"

DEMO=$BRAID_CACHE/demo
LOGS=$DEMO/logs
TOOLS=$DEMO/bin
FAKE_PCI=$DEMO/fake-pci
LAYER=$DEMO/install # the kustomization with this machine's paths, on top of deploy/local/overlay
CONF_DIR=$STATE/cni/net.d
CRICTL_CONFIG=$STATE/crictl.yaml
ETC_LINK=/etc/cni/net.d/braid.d
NS=braid-demo
SYS=braid-system
VF_RESOURCE=braid.dev/data_vf
VF_COUNT=3 # demo.VFs
CRDS=(ippools.braid.dev floatingips.braid.dev network-attachment-definitions.k8s.cni.cncf.io)

kubectl_admin() { kubectl --kubeconfig "$KUBECONFIG_ADMIN" --request-timeout 20s "$@"; }
braid_demo() { "$TOOLS/braid-demo" "$@"; }
rel() { printf '%s' "${1#"$REPO"/}"; }

T0=$SECONDS
STEP_NO=0
STEP_NAME=""
STEP_HINT=""
STEP_T0=$SECONDS
STEPS=7

# step_begin NAME HINT: a progress line; HINT is where to look if the step fails.
step_begin() {
	step_end
	STEP_NO=$((STEP_NO + 1))
	STEP_NAME=$1
	STEP_HINT=$2
	STEP_T0=$SECONDS
	printf '[%d/%d] %s\n' "$STEP_NO" "$STEPS" "$STEP_NAME"
}
step_end() {
	if [[ -n $STEP_NAME ]]; then printf '      done in %ds\n' "$((SECONDS - STEP_T0))"; fi
	STEP_NAME=""
}

# fail MESSAGE stops the demo: what failed, in which step, where to look, and what the cluster says.
fail() {
	# A failure inside a pipeline's subshell is reported once, by the main shell, when the pipeline fails.
	if [[ $BASHPID != "$$" ]]; then exit 1; fi
	trap - ERR
	printf '\nerror: %s\n' "$1" >&2
	if [[ -n $STEP_NAME ]]; then
		printf 'The demo stopped at step %d/%d (%s) after %ds.\n' "$STEP_NO" "$STEPS" "$STEP_NAME" "$((SECONDS - T0))" >&2
		printf 'Where to look: %s\n' "$STEP_HINT" >&2
	fi
	if kubectl_admin get --raw /readyz >/dev/null 2>&1; then
		printf -- '--- pods that are not ready ---\n' >&2
		kubectl_admin get pods -A -o wide 2>/dev/null | awk 'NR == 1 || $3 !~ /^([0-9]+)\/\1$/ || $4 != "Running"' >&2 || true
		printf -- '--- last events in %s and %s ---\n' "$SYS" "$NS" >&2
		for ns in "$SYS" "$NS"; do
			kubectl_admin -n "$ns" get events --sort-by=.lastTimestamp 2>/dev/null | tail -n 8 >&2 || true
		done
	fi
	printf 'What did start keeps running; remove it all with: make demo-down\n' >&2
	exit 1
}
trap 'fail "command failed (exit $?): $BASH_COMMAND"' ERR
set -o errtrace

# wait_for WHAT TIMEOUT CMD... polls CMD every second until it succeeds or TIMEOUT seconds pass.
wait_for() {
	local what=$1 timeout=$2
	shift 2
	local deadline=$((SECONDS + timeout))
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || fail "timed out after ${timeout}s waiting for $what"
		sleep 1
	done
}

# ---------------------------------------------------------------------------------------------------
# steps

build() {
	step_begin "building braid's binaries and the demo's tools" "the go build output above"
	mkdir -p "$TOOLS" "$LOGS"
	(cd "$REPO" && make --no-print-directory build | sed 's/^/      /')
	(cd "$REPO" && CGO_ENABLED=0 go build -trimpath -o "$TOOLS/braid-demo" ./deploy/local/demo/cmd/braid-demo &&
		CGO_ENABLED=0 go build -trimpath -o "$TOOLS/braid-sriov-fixture" ./sriov-device/cmd/braid-sriov-fixture)
}

underlay() {
	step_begin "simulating the node's underlay NICs: mgmt0, ctl0 and three SR-IOV VFs (vf0..vf2)" \
		"'ip netns list' (braid-sw-*, braid-peer-*) and 'ip link' on the host; the fake PCI tree in $(rel "$FAKE_PCI")"
	braid_demo underlay up
	if [[ ! -d $FAKE_PCI/sys/bus/pci/devices ]]; then
		local args
		mapfile -t args < <(braid_demo fixture-args)
		"$TOOLS/braid-sriov-fixture" --root "$FAKE_PCI" "${args[@]}" | sed 's/^/      /'
	fi
	printf '      switches (netns): braid-sw-mgmt, braid-sw-control, braid-sw-data; peer hosts: braid-peer-*\n'
}

cluster() {
	step_begin "starting the local cluster (the first run builds Kubernetes: about 7 minutes)" \
		"$(rel "$LOGS")/cluster-up.log and $(rel "$STATE")/logs/<component>.log"
	# A cluster that runs without the demo's PCI tree (a plain `make cluster-up`) is restarted with it.
	local running
	running=$(cat "$STATE/containerd.fake-pci" 2>/dev/null || true)
	if [[ -e $STATE/containerd.pid && $running != "$FAKE_PCI" ]] && kill -0 "$(cat "$STATE/containerd.pid")" 2>/dev/null; then
		printf '      a local cluster runs without the demo'"'"'s fake PCI tree: stopping it first\n'
		"$REPO/deploy/local/cluster-down.sh" 2>&1 | sed 's/^/      /'
	fi
	BRAID_FAKE_PCI=$FAKE_PCI "$REPO/deploy/local/cluster-up.sh" 2>&1 | tee "$LOGS/cluster-up.log" | sed 's/^/      /'
	# cluster-up imports images only when it starts containerd: import a fresh build into a running one too.
	"$REPO/deploy/local/images.sh" 2>&1 | sed 's/^/      /'
}

# ensure_etc_link points braid-ipam's default kubeconfig dir at the one braid's installer keeps.
ensure_etc_link() {
	local target=$CONF_DIR/braid.d d
	if [[ -L $ETC_LINK && $(readlink "$ETC_LINK") == "$target" ]]; then return 0; fi
	if [[ -e $ETC_LINK || -L $ETC_LINK ]]; then
		fail "$ETC_LINK exists and is not the demo's: braid seems installed on this machine; the demo needs that path"
	fi
	for d in /etc/cni /etc/cni/net.d; do
		if [[ ! -d $d ]]; then
			mkdir "$d"
			echo "$d" >>"$DEMO/created-dirs"
		fi
	done
	ln -s "$target" "$ETC_LINK"
}

# write_layer writes the last kustomize layer: deploy/local/overlay with this machine's paths. The `test`
# operations make the build fail, rather than patch the wrong flag, if the base's arguments change.
write_layer() {
	mkdir -p "$LAYER"
	local overlay braid_conf
	overlay=$(realpath --relative-to="$LAYER" "$REPO/deploy/local/overlay")
	braid_conf=$(printf '{"cniDir":"%s","deviceInfoDir":"%s","podResourcesSocket":"%s","logFile":"%s","logLevel":"verbose"}' \
		"$STATE/braid" "$STATE/devinfo" "$STATE/kubelet/pod-resources/kubelet.sock" "$STATE/logs/braid-cni.log")
	cat >"$LAYER/kustomization.yaml" <<EOF
# Written by deploy/local/demo.sh: deploy/local/overlay plus this machine's paths (the local cluster keeps its
# CNI dirs, kubelet root and device-info files under $(rel "$BRAID_CACHE")/, and the fake PCI tree is here).
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- $overlay
patches:
- target: {kind: DaemonSet, name: braid}
  patch: |-
    - {op: test, path: /spec/template/spec/containers/0/args/3, value: -host-conf-dir=/etc/cni/net.d}
    - {op: replace, path: /spec/template/spec/containers/0/args/3, value: -host-conf-dir=$CONF_DIR}
    - {op: test, path: /spec/template/spec/containers/0/args/4, value: "-braid-conf={}"}
    - {op: replace, path: /spec/template/spec/containers/0/args/4, value: '-braid-conf=$braid_conf'}
    - {op: test, path: /spec/template/spec/volumes/0/name, value: cni-bin}
    - {op: replace, path: /spec/template/spec/volumes/0/hostPath/path, value: $CNI_BIN}
    - {op: test, path: /spec/template/spec/volumes/1/name, value: cni-conf}
    - {op: replace, path: /spec/template/spec/volumes/1/hostPath/path, value: $CONF_DIR}
    - {op: test, path: /spec/template/spec/containers/1/args/2, value: -kubeconfig=/etc/cni/net.d/braid.d/braid.kubeconfig}
    - {op: replace, path: /spec/template/spec/containers/1/args/2, value: -kubeconfig=$CONF_DIR/braid.d/braid.kubeconfig}
    - {op: test, path: /spec/template/spec/containers/1/args/3, value: -state-dir=/var/lib/cni/braid/status-queue}
    - {op: replace, path: /spec/template/spec/containers/1/args/3, value: -state-dir=$STATE/braid/status-queue}
    - {op: add, path: /spec/template/spec/containers/1/volumeMounts/-, value: {name: cluster-state, mountPath: /hostroot$STATE, mountPropagation: HostToContainer}}
    - {op: add, path: /spec/template/spec/volumes/-, value: {name: cluster-state, hostPath: {path: $STATE, type: Directory}}}
- target: {kind: DaemonSet, name: braid-sriov-dp}
  patch: |-
    - {op: add, path: /spec/template/spec/containers/0/args/-, value: --root=$FAKE_PCI}
    - {op: add, path: /spec/template/spec/containers/0/volumeMounts/-, value: {name: fake-pci, mountPath: $FAKE_PCI, readOnly: true}}
    - {op: add, path: /spec/template/spec/volumes/-, value: {name: fake-pci, hostPath: {path: $FAKE_PCI, type: Directory}}}
    - {op: test, path: /spec/template/spec/volumes/1/name, value: devinfo}
    - {op: replace, path: /spec/template/spec/volumes/1/hostPath/path, value: $STATE/devinfo/dp}
EOF
}

node_offers_vfs() {
	[[ $(kubectl_admin get node "$NODE_NAME" -o jsonpath="{.status.allocatable.${VF_RESOURCE//./\\.}}") == "$VF_COUNT" ]]
}

install() {
	step_begin "installing braid from deploy/ with kubectl (kubectl apply -k, local overlay)" \
		"kubectl -n $SYS get pods; kubectl -n $SYS logs ds/braid (installer), ds/braid-sriov-dp, deploy/braid-ipam-server"
	ensure_etc_link
	write_layer
	local stamp=$BRAID_CACHE/images/braid.tar.stamp installed=$DEMO/installed-image.stamp existed=false
	if kubectl_admin -n "$SYS" get daemonset braid >/dev/null 2>&1; then existed=true; fi
	printf '      kubectl apply -k %s   (= deploy/local/overlay + paths)\n' "$(rel "$LAYER")"
	kubectl_admin apply -k "$LAYER" | sed 's/^/      /'
	# A re-run with a new build: the image tag stays, so restart the pods onto the new image.
	if $existed && ! cmp -s "$stamp" "$installed"; then
		kubectl_admin -n "$SYS" rollout restart daemonset/braid daemonset/braid-sriov-dp deployment/braid-ipam-server | sed 's/^/      /'
	fi
	cp "$stamp" "$installed"
	kubectl_admin wait --for=condition=Established --timeout=60s "${CRDS[@]/#/crd/}" >/dev/null
	kubectl_admin -n "$SYS" rollout status daemonset/braid --timeout=180s | sed 's/^/      /'
	kubectl_admin -n "$SYS" rollout status daemonset/braid-sriov-dp --timeout=180s | sed 's/^/      /'
	kubectl_admin -n "$SYS" rollout status deployment/braid-ipam-server --timeout=180s | sed 's/^/      /'
	wait_for "braid's conf and kubeconfig in $(rel "$CONF_DIR")" 60 \
		test -s "$CONF_DIR/00-braid.conflist" -a -s "$ETC_LINK/braid.kubeconfig"
	printf '      %s written by braid install, in front of 10-cluster.conflist\n' "$(rel "$CONF_DIR")/00-braid.conflist"
	wait_for "node $NODE_NAME to offer $VF_COUNT $VF_RESOURCE" 90 node_offers_vfs
	printf '      node %s offers %s: %s\n' "$NODE_NAME" "$VF_RESOURCE" "$VF_COUNT"
}

examples() {
	step_begin "applying deploy/examples: 4 IPPools, 3 networks, StatefulSet db (2 pods), Deployment web (2 pods)" \
		"kubectl -n $NS describe pods (events: BraidAddFailed, PoolExhausted, ...); $(rel "$STATE")/logs/braid-cni.log; kubectl -n $SYS logs deploy/braid-ipam-server"
	# kubectl warns that the kustomization's sortOptions win over its own default order: that is the point.
	kubectl_admin apply -k "$REPO/deploy/examples" 2>&1 | sed -e '/Sorting order is set both/d' -e 's/^/      /'
	kubectl_admin -n "$NS" rollout status statefulset/db --timeout=240s | sed 's/^/      /'
	kubectl_admin -n "$NS" rollout status deployment/web --timeout=240s | sed 's/^/      /'
	# braid-ipam-server writes pool status in bursts a few seconds apart; the report shows it once it is true.
	wait_for "the IPPools' status to count every FloatingIP" 60 pools_agree
}

# pools_agree: the pools' status.used add up to the FloatingIPs that exist (and there are some).
pools_agree() {
	local used sum=0 fips u
	used=$(kubectl_admin get ippools -o jsonpath='{range .items[*]}{.status.used}{" "}{end}')
	fips=$(kubectl_admin get floatingips -o name | wc -l)
	for u in $used; do sum=$((sum + u)); done
	[[ $fips -gt 0 && $sum -eq $fips ]]
}

report() {
	local crictl=(-kubeconfig "$KUBECONFIG_ADMIN" -crictl "$BIN/crictl" -crictl-config "$CRICTL_CONFIG" -namespace "$NS")
	step_begin "reading every pod's interfaces from inside the pod" \
		"kubectl -n $NS get pods -o yaml (k8s.v1.cni.cncf.io/network-status); $(rel "$STATE")/logs/braid-cni.log"
	printf '\n'
	braid_demo pods "${crictl[@]}"
	printf '\n$ kubectl get ippools\n'
	kubectl_admin get ippools
	printf '\n$ kubectl get floatingips\n'
	kubectl_admin get floatingips
	printf '\n'
	step_begin "proving it: pings to each network's peer host, and the switches' packet counters" \
		"the table above; 'ip netns exec braid-sw-<net> ebtables-nft -L FORWARD --Lc'"
	printf '\n'
	braid_demo prove "${crictl[@]}" || fail "a proof failed (see above)"
	printf '\n'
}

# ---------------------------------------------------------------------------------------------------
# teardown

# wait_sandboxes_stopped NAMESPACE waits up to a minute for the runtime to have stopped every sandbox of that
# namespace: stopping one runs its CNI DEL (the kubelet removes stopped sandboxes later, in its own time).
wait_sandboxes_stopped() {
	local i
	for ((i = 0; i < 60; i++)); do
		[[ -z $("$BIN/crictl" --config "$CRICTL_CONFIG" pods -q --state ready --namespace "$1" 2>/dev/null) ]] && return 0
		sleep 1
	done
	step "warning: pod sandboxes of $1 still run after 60s"
	return 1
}

down() {
	local api=false clean=true
	if kubectl_admin get --raw /readyz >/dev/null 2>&1; then api=true; fi
	if $api; then
		# The examples' sandboxes must go while braid still runs, so that braid's DEL gives each VF back
		# to the node and each address back to its pool.
		step "removing the examples (their pods go through braid's CNI DEL)"
		kubectl_admin delete -k "$REPO/deploy/examples" --ignore-not-found --wait=true --timeout=180s 2>&1 >/dev/null |
			sed '/Sorting order is set both/d' >&2 || clean=false
		wait_sandboxes_stopped "$NS" || clean=false
		step "examples removed ($((SECONDS - T0))s)"
		if [[ -f $LAYER/kustomization.yaml ]]; then
			step "removing braid (kubectl delete -k $(rel "$LAYER"))"
			kubectl_admin delete -k "$LAYER" --ignore-not-found --wait=true --timeout=180s >/dev/null || clean=false
			wait_sandboxes_stopped "$SYS" || clean=false
			step "braid removed ($((SECONDS - T0))s)"
		fi
	elif [[ -f $LAYER/kustomization.yaml && -d $STATE/etcd-data ]]; then
		clean=false # braid was installed and the API server cannot remove it
	fi
	# What braid's installer left on the node (it keeps its conf on exit, on purpose).
	rm -rf "$CONF_DIR/00-braid.conflist" "$CONF_DIR/braid.d" "$CNI_BIN/braid" "$CNI_BIN/braid-shim" "$CNI_BIN/braid-ipam" "$CNI_BIN/braid-ipam-api" \
		"$STATE/braid" "$STATE/devinfo"
	if $clean; then
		"$REPO/deploy/local/cluster-down.sh"
	else
		# Objects left in etcd would come back with the next cluster-up: start that one from scratch.
		step "the API server could not remove braid's objects: wiping the cluster's state"
		"$REPO/deploy/local/cluster-down.sh" --wipe
	fi
	step "removing the simulated underlay (braid-sw-*, braid-peer-*, mgmt0, ctl0, vf*) and the fake PCI tree"
	if [[ -x $TOOLS/braid-demo ]]; then
		braid_demo underlay down
	else
		(cd "$REPO" && go run ./deploy/local/demo/cmd/braid-demo underlay down)
	fi
	rm -rf "$FAKE_PCI" "$LAYER" "$DEMO/installed-image.stamp"
	if [[ -L $ETC_LINK && $(readlink "$ETC_LINK") == "$CONF_DIR/braid.d" ]]; then rm -f "$ETC_LINK"; fi
	if [[ -f $DEMO/created-dirs ]]; then
		tac "$DEMO/created-dirs" | while read -r d; do rmdir "$d" 2>/dev/null || true; done
		rm -f "$DEMO/created-dirs"
	fi
	step "demo removed"
}

# ---------------------------------------------------------------------------------------------------

main() {
	[[ $(id -u) -eq 0 ]] || die "demo.sh must run as root (network namespaces, containerd, kubelet)"
	case ${1:-up} in
	up)
		build
		underlay
		cluster
		install
		examples
		report
		step_end
		printf 'braid demo up in %ds. The cluster keeps running:\n' "$((SECONDS - T0))"
		printf '  export KUBECONFIG=%s; %s/kubectl get pods -n %s\n' "$KUBECONFIG_ADMIN" "$BIN" "$NS"
		printf '  make demo-report    # this report again\n'
		printf '  make demo-down      # remove it all: braid, the examples, the cluster, the simulated underlay\n'
		;;
	report)
		trap - ERR
		STEPS=2
		[[ -x $TOOLS/braid-demo ]] || die "the demo is not up: run 'make demo'"
		report
		step_end
		;;
	down)
		trap - ERR
		down
		;;
	*) die "usage: $0 [up|report|down]" ;;
	esac
}

main "$@"
