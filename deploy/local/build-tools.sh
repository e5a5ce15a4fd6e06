#!/usr/bin/env bash
# Builds the pinned binaries of the local test cluster from the Go module proxy into the ignored cache.
# Each group is a tools module under tools/ (go.mod + go.sum only, `tool` directives); a group is rebuilt
# only when its go.mod/go.sum change. Usage: build-tools.sh [group...]  (default: all but lint)
set -euo pipefail
# shellcheck source=env.sh
source "$(dirname "$0")/env.sh"

build_group() { # group outdir
	local group=$1 out=$2 dir=$REPO/deploy/local/tools/$1
	local stamp=$out/.stamp-$group want
	want=$(cat "$dir/go.mod" "$dir/go.sum" | sha256sum | cut -c1-16)
	if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then return 0; fi
	step "building $group tools (first run takes minutes; later runs are cached)"
	mkdir -p "$out"
	local start=$SECONDS ldflags="-s -w"
	if [[ $group == kubernetes ]]; then
		local v
		v=$(awk '$1=="k8s.io/kubernetes"{print $2}' "$dir/go.mod")
		local maj=${v#v} min=${v#v*.}; maj=${maj%%.*}; min=${min%%.*}
		for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
			ldflags+=" -X $p.gitVersion=$v -X $p.gitMajor=$maj -X $p.gitMinor=$min -X $p.gitTreeState=clean"
		done
	fi
	# go.etcd.io/etcd/server/v3 would be named "server" and whereabouts' "cmd"; the rest keep their names.
	local target=$out/
	case $group in
	etcd) target=$out/etcd ;;
	whereabouts) target=$out/whereabouts ;;
	esac
	# The checksum database has no entry for whereabouts (see tools/whereabouts/go.mod).
	(cd "$dir" && GONOSUMDB=github.com/k8snetworkplumbingwg CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$target" tool)
	echo "$want" >"$stamp"
	step "built $group in $((SECONDS - start))s"
}

groups=("$@")
[[ ${#groups[@]} -gt 0 ]] || groups=(kubernetes etcd crictl cni codegen)
for g in "${groups[@]}"; do
	case $g in
	cni | whereabouts) build_group "$g" "$CNI_BIN" ;;
	*) build_group "$g" "$BIN" ;;
	esac
done
