#!/usr/bin/env bash
# Stops the local cluster started by cluster-up.sh and undoes what it did to the host, leaving no process,
# mount, network link, netns, cgroup, iptables chain, sysctl change or runtime file behind.
# Usage: cluster-down.sh [--wipe]
#   default  keep etcd data, certificates and containerd's image store, so the next up is fast
#   --wipe   delete all of $STATE, so the next up starts from scratch
# Safe to run when nothing is up, and twice in a row. Only processes this cluster started are signalled:
# by the PIDs in $STATE/*.pid (checked against their command line), by containerd shims serving this
# cluster's socket, and by the processes in the kubepods/ and k8s.io/ cgroups the cluster created.
set -euo pipefail
# shellcheck source=env.sh source-path=SCRIPTDIR
source "$(dirname "$0")/env.sh"

CTRD=$STATE/containerd
CTR_SOCK=$CTRD/containerd.sock
BRIDGE=braidclu0
CNI_NETWORK=braid-cluster
IDS=() # this cluster's sandbox and container IDs, see cluster_ids

# pid_of NAME prints the PID of component NAME if it is still the process cluster-up started: alive, not a
# zombie, and its command line mentions $STATE (so a recycled PID is never signalled).
pid_of() {
	local pid
	pid=$(cat "$STATE/$1.pid" 2>/dev/null) || return 1
	[[ $pid =~ ^[0-9]+$ ]] && running "$pid" || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$STATE" || return 1
	echo "$pid"
}

# running PID: the process exists and is not a zombie (a zombie is dead, just not yet reaped).
running() {
	local state
	state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
	[[ -n $state && $state != Z ]]
}

# terminate TIMEOUT PID... sends SIGTERM, waits up to TIMEOUT seconds, then SIGKILLs the survivors.
terminate() {
	local timeout=$1 pid deadline
	shift
	[[ $# -gt 0 ]] || return 0
	kill -TERM "$@" 2>/dev/null || true
	deadline=$((SECONDS + timeout))
	for pid in "$@"; do
		while running "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
		if running "$pid"; then
			step "pid $pid ignored SIGTERM for ${timeout}s: SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	done
	for pid in "$@"; do
		for _ in {1..50}; do running "$pid" || break; sleep 0.1; done
	done
}

# group_members PGID prints the running processes of process group PGID whose command line names $STATE
# (so that a process which merely reuses the number is never touched).
group_members() {
	local p stat pgrp
	for p in /proc/[0-9]*; do
		read -r stat 2>/dev/null <"$p/stat" || continue
		read -r _ _ pgrp _ <<<"${stat##*) }" # after the command name: state, ppid, pgrp
		if [[ $pgrp != "$1" ]] || ! running "${p#/proc/}"; then continue; fi
		tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF "$STATE" && echo "${p#/proc/}"
	done
	return 0
}

# stop NAME TIMEOUT stops one component by its PID file, and what is left of its process group.
stop() {
	local name=$1 timeout=$2 pid
	if pid=$(pid_of "$name"); then
		step "stopping $name (pid $pid)"
		terminate "$timeout" "$pid"
	fi
	# cluster-up.sh started it with setsid, so its process group's ID is the PID in its file. What is left
	# of that group goes too: the child of a supervisor loop (launch_supervised) that died or was SIGKILLed.
	local left=()
	if pid=$(cat "$STATE/$name.pid" 2>/dev/null) && [[ $pid =~ ^[0-9]+$ ]]; then
		mapfile -t left < <(group_members "$pid")
	fi
	if [[ ${#left[@]} -gt 0 ]]; then
		step "stopping what is left of $name's process group: ${left[*]}"
		terminate "$timeout" "${left[@]}"
	fi
	rm -f "$STATE/$name.pid"
}

# remove_pods deletes every container and sandbox through CRI while containerd still runs, so that the
# CNI DEL of each sandbox releases its address and veth and containerd unmounts its netns and shm.
remove_pods() {
	pid_of containerd >/dev/null || return 0
	local crictl=(timeout 60 "$BIN/crictl" --config "$STATE/crictl.yaml")
	local pods
	pods=$("${crictl[@]}" pods -q 2>/dev/null | wc -l) || pods=0
	[[ $pods -gt 0 ]] || return 0
	step "removing $pods pod sandbox(es) through CRI (runs CNI DEL)"
	"${crictl[@]}" rm --all --force >/dev/null 2>&1 || true
	"${crictl[@]}" rmp --all --force >/dev/null 2>&1 || step "warning: crictl rmp failed; cleaning up by hand"
}

# cluster_cgroups prints the kubepods/ and k8s.io/ cgroup dirs of every hierarchy, deepest first.
cluster_cgroups() {
	local root
	for root in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/*/k8s.io /sys/fs/cgroup/kubepods /sys/fs/cgroup/k8s.io; do
		[[ -d $root ]] && find "$root" -depth -type d
	done
	return 0
}

# kill_leftovers ends what survives a failed CRI cleanup or a crashed containerd: the shims serving
# this cluster's socket and any process still inside the cluster's cgroups (container processes).
kill_leftovers() {
	local pids=() pid cg
	for pid in $(pgrep -f -- "containerd-shim.*-address $CTR_SOCK" || true); do pids+=("$pid"); done
	while read -r cg; do
		[[ -f $cg/cgroup.procs ]] || continue
		while read -r pid; do pids+=("$pid"); done <"$cg/cgroup.procs"
	done < <(cluster_cgroups)
	[[ ${#pids[@]} -gt 0 ]] || return 0
	mapfile -t pids < <(printf '%s\n' "${pids[@]}" | sort -un)
	step "stopping ${#pids[@]} leftover shim/container process(es): ${pids[*]}"
	terminate 5 "${pids[@]}"
}

# state_mounts prints the mount points under $STATE, deepest first.
state_mounts() {
	awk -v s="$STATE" '{ m = $5; gsub(/\\040/, " ", m); if (m == s || index(m, s "/") == 1) print m }' \
		/proc/self/mountinfo | LC_ALL=C sort -ru
}

# unmount_state unmounts everything under $STATE: kubelet's bind mount of its root dir and the pods'
# volumes, containerd's rootfs overlays, sandbox shm and netns bind mounts. Mounts can stack (kubelet
# bind-mounts its root onto itself), hence the loop; a busy mount is detached lazily as a last resort.
unmount_state() {
	local m round
	local -a mounts
	for round in 1 2 3 4 5; do
		mapfile -t mounts < <(state_mounts)
		[[ ${#mounts[@]} -gt 0 ]] || return 0
		if [[ $round -eq 1 ]]; then step "unmounting ${#mounts[@]} mount(s) under ${STATE#"$REPO"/}"; fi
		for m in "${mounts[@]}"; do
			umount "$m" 2>/dev/null || { [[ $round -ge 3 ]] && umount -l "$m" 2>/dev/null; } || true
		done
	done
	mapfile -t mounts < <(state_mounts)
	[[ ${#mounts[@]} -eq 0 ]] || die "still mounted under $STATE: ${mounts[*]}"
}

# remove_network deletes the cluster bridge and the host ends of pod veths still plugged into it. (A veth
# whose pod netns is gone disappears by itself once the kernel frees that netns.)
remove_network() {
	local link
	if ip link show dev "$BRIDGE" >/dev/null 2>&1; then
		for link in $(ip -o link show master "$BRIDGE" | awk -F': ' '{print $2}' | cut -d@ -f1); do
			ip link del dev "$link" 2>/dev/null || true
		done
		step "deleting bridge $BRIDGE"
		ip link del dev "$BRIDGE" 2>/dev/null || true
	fi
	# Netns files are plain files once unmounted.
	rm -rf "$CTRD/state/io.containerd.grpc.v1.cri/netns"
	# No pod survives a down, so host-local's reservations are all stale.
	rm -rf "$STATE/cni/ipam"
}

remove_cgroups() {
	local cg round
	for round in {1..30}; do
		while read -r cg; do rmdir "$cg" 2>/dev/null || true; done < <(cluster_cgroups)
		[[ -z $(cluster_cgroups) ]] && return 0
		sleep 0.2 # a cgroup stays busy for a moment after its last process exits
	done
	step "warning: cgroups left: $(cluster_cgroups | tr '\n' ' ')"
}

# remove_iptables deletes the KUBE-* chains kubelet creates (and the jumps into them), but only when
# cluster-up recorded that there were no KUBE-* chains before, i.e. they are ours. One *-save per family
# finds what exists, so only needed deletions run.
remove_iptables() {
	[[ -e $STATE/host/iptables-ours ]] || { rm -f "$STATE/host/iptables-checked"; return 0; }
	local ipt table chain target kind op
	for ipt in iptables ip6tables; do
		command -v "$ipt-save" >/dev/null || continue
		local rules
		rules=$("$ipt-save" 2>/dev/null | awk '
			/^\*/ { table = substr($0, 2) }
			/^-A [^ ]+ -j KUBE-[^ ]+$/ && $2 !~ /^KUBE-/ { print "jump", table, $2, $4 }
			/^:KUBE-/ { print "chain", table, substr($1, 2) }')
		# Jumps first, then flush every chain, then delete them (a chain in use cannot be deleted).
		while read -r kind table chain target; do
			if [[ $kind == jump ]]; then "$ipt" -w -t "$table" -D "$chain" -j "$target" || true; fi
		done <<<"$rules"
		for op in -F -X; do
			while read -r kind table chain _; do
				if [[ $kind == chain ]]; then "$ipt" -w -t "$table" "$op" "$chain" || true; fi
			done <<<"$rules"
		done
	done
	rm -f "$STATE/host/iptables-ours" "$STATE/host/iptables-checked"
}

# restore_sysctls puts back the kernel tunables kubelet changed (saved by cluster-up before the first start).
restore_sysctls() {
	local f=$STATE/host/sysctls line
	[[ -f $f ]] || return 0
	while read -r line; do
		sysctl -q -w "$line" >/dev/null 2>&1 || step "warning: could not restore sysctl $line"
	done <"$f"
	rm -f "$f"
}

# cluster_ids prints the IDs of this cluster's sandboxes and containers, read from containerd's own dirs
# under $CTRD (so it works with containerd dead too). Called before the pods are removed.
cluster_ids() {
	local d
	for d in "$CTRD/state/io.containerd.runtime.v2.task/k8s.io" "$CTRD/root/io.containerd.grpc.v1.cri/sandboxes" \
		"$CTRD/root/io.containerd.grpc.v1.cri/containers"; do
		if [[ -d $d ]]; then ls -1 "$d"; fi
	done
}

# socket_in_use PATH: some process listens on the unix socket PATH.
socket_in_use() {
	awk -v p="$1" 'NR > 1 && $NF == p { found = 1 } END { exit !found }' /proc/net/unix
}

# remove_host_files deletes what this cluster left in the runtime paths that containerd, libcni and
# kubelet hard-code outside $STATE, and nothing else:
#   /run/containerd/s/<sha256(address/namespace/id)>   shim sockets of this cluster's containerd
#   /var/lib/cni/results/<network>-<id>-<ifname>       libcni's cache for this cluster's sandboxes
#   /var/lib/kubelet/device-plugins/*                   kubelet's socket, checkpoint, dead plugin sockets
#   /var/log/containers/*                               kubelet's links into $STATE/pod-logs
# Each of those dirs that cluster-up recorded as created by the cluster is then removed if empty; one that
# still holds someone else's files is kept, and said so.
remove_host_files() {
	local id f dir list=$STATE/host/created-dirs
	for id in "${IDS[@]}"; do
		rm -f "/run/containerd/s/$(printf '%s' "$CTR_SOCK/k8s.io/$id" | sha256sum | cut -d' ' -f1)"
		rm -f /var/lib/cni/results/*-"$id"-*
	done
	rm -f /var/lib/cni/results/"$CNI_NETWORK"-*
	rm -f /var/lib/kubelet/device-plugins/kubelet_internal_checkpoint
	for f in /var/lib/kubelet/device-plugins/*; do
		if [[ -S $f ]] && ! socket_in_use "$f"; then rm -f "$f"; fi
	done
	if [[ -d /var/log/containers ]]; then
		find /var/log/containers -maxdepth 1 -type l -lname "$STATE/*" -delete
	fi
	[[ -f $list ]] || return 0
	while read -r dir; do
		# Only the dirs cluster-up may record, whatever the file says.
		case $dir in
		/run/containerd | /var/lib/cni | /var/lib/kubelet | /var/log/pods | /var/log/containers) ;;
		*) continue ;;
		esac
		if [[ -d $dir ]]; then find "$dir" -depth -type d -empty -delete; fi
		if [[ -e $dir ]]; then
			step "kept $dir (created by the cluster) because it holds files that are not the cluster's"
		fi
	done <"$list"
	rm -f "$list"
}

nothing_to_do() {
	[[ ! -d $STATE ]] && ! ip link show dev "$BRIDGE" >/dev/null 2>&1
}

main() {
	local wipe=false
	case ${1:-} in
	--wipe) wipe=true ;;
	"") ;;
	*) die "usage: $0 [--wipe]" ;;
	esac
	if nothing_to_do; then
		step "local cluster is not up (nothing under ${STATE#"$REPO"/})"
		return 0
	fi
	[[ $(id -u) -eq 0 ]] || die "cluster-down.sh must run as root"

	mapfile -t IDS < <(cluster_ids | sort -u)
	stop kubelet 20
	remove_pods
	stop kube-scheduler 20
	stop kube-controller-manager 20
	stop kube-apiserver 30 # before etcd: an apiserver without etcd hangs in shutdown
	stop etcd 20
	stop containerd 20
	kill_leftovers
	unmount_state
	remove_network
	remove_cgroups
	remove_iptables
	restore_sysctls
	remove_host_files
	rm -f "$CTR_SOCK" "$CTR_SOCK.ttrpc" "$STATE/containerd.fake-pci"
	if $wipe; then
		step "wiping ${STATE#"$REPO"/}"
		rm -rf "$STATE"
	fi
	step "local cluster down"
}

main "$@"
