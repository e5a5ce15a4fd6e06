#!/usr/bin/env bash
# Builds the local cluster's container images as OCI image-layout tarballs in .cache/images/ — there is no
# registry on this machine, so images are made by hand and imported into containerd:
#   pause.tar  registry.k8s.io/pause:3.10  the sandbox image (deploy/local/pause, a static Go program)
#   braid.tar  localhost/braid:dev         braid's binaries from .cache/braid-bin (`make build`) and the pause
#                                          binary at /usr/bin/, the CNI reference plugins at /opt/cni/bin/
# The tarballs are deterministic (sorted entries, fixed owners/modes/mtimes, gzip -n), so a stamp of each
# image's contents decides whether it is rebuilt. If the local cluster's containerd is running, each image
# is imported into it unless containerd already holds that exact manifest; otherwise cluster-up imports them.
set -euo pipefail
# shellcheck source=env.sh source-path=SCRIPTDIR
source "$(dirname "$0")/env.sh"

IMAGES=$BRAID_CACHE/images
BRAID_BIN=$BRAID_CACHE/braid-bin
PAUSE_IMAGE=registry.k8s.io/pause:3.10
BRAID_IMAGE=localhost/braid:dev
CTR_SOCK=$STATE/containerd/containerd.sock
ARCH=$(go env GOARCH)

# sha256 FILE prints the hex sha256 of FILE.
sha256() { sha256sum "$1" | cut -d' ' -f1; }

# pause_binary prints the path of the static pause binary, compiling deploy/local/pause only when its
# source or the Go toolchain changed (it uses nothing but the standard library). -trimpath and an empty
# build ID make the binary depend on nothing else.
pause_binary() {
	local out=$IMAGES/.pause/pause stamp want
	stamp=$out.stamp
	want=$({ go version; echo "$ARCH"; cat "$REPO"/deploy/local/pause/*.go; } | sha256sum | cut -d' ' -f1)
	if [[ ! -x $out || ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
		mkdir -p "${out%/*}"
		(cd "$REPO" && CGO_ENABLED=0 GOARCH=$ARCH go build -trimpath -ldflags '-s -w -buildid=' \
			-o "$out" ./deploy/local/pause) >&2
		echo "$want" >"$stamp"
	fi
	echo "$out"
}

# add_blob LAYOUT FILE MEDIATYPE stores FILE as a content-addressed blob and prints its OCI descriptor
# fields (without braces), ready to be embedded in a JSON object.
add_blob() {
	local layout=$1 file=$2 media=$3 digest
	digest=$(sha256 "$file")
	cp "$file" "$layout/blobs/sha256/$digest"
	printf '"mediaType":"%s","digest":"sha256:%s","size":%s' "$media" "$digest" "$(stat -c %s "$file")"
}

# make_image NAME ROOTFS CONFIG_JSON OUT writes an OCI image-layout tarball of one gzip layer holding ROOTFS.
# CONFIG_JSON is the image config's "config" object (Entrypoint, Env, ...).
make_image() {
	local name=$1 rootfs=$2 config=$3 out=$4 work
	work=$(mktemp -d "$IMAGES/.work.XXXXXX")
	local layout=$work/layout
	mkdir -p "$layout/blobs/sha256"
	# Fixed owner, mtime and order make the layer byte-for-byte reproducible.
	tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 --format=gnu \
		-C "$rootfs" -cf "$work/layer.tar" .
	local diff_id layer config_blob manifest
	diff_id=$(sha256 "$work/layer.tar")
	gzip -n -c "$work/layer.tar" >"$work/layer.tar.gz"
	layer=$(add_blob "$layout" "$work/layer.tar.gz" application/vnd.oci.image.layer.v1.tar+gzip)
	printf '{"architecture":"%s","os":"linux","config":%s,"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
		"$ARCH" "$config" "$diff_id" >"$work/config.json"
	config_blob=$(add_blob "$layout" "$work/config.json" application/vnd.oci.image.config.v1+json)
	printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{%s},"layers":[{%s}]}' \
		"$config_blob" "$layer" >"$work/manifest.json"
	manifest=$(add_blob "$layout" "$work/manifest.json" application/vnd.oci.image.manifest.v1+json)
	# containerd names the imported image after the io.containerd.image.name annotation.
	printf '{"schemaVersion":2,"manifests":[{%s,"platform":{"architecture":"%s","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
		"$manifest" "$ARCH" "$name" "${name##*:}" >"$layout/index.json"
	echo '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
	tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 --format=gnu \
		-C "$layout" -cf "$work/image.tar" oci-layout index.json blobs
	mv "$work/image.tar" "$out"
	rm -rf "$work"
}

# rootfs_stamp NAME ROOTFS CONFIG_JSON hashes everything an image is made of: file paths, modes and
# contents, the config and this script (so a change to how images are made also rebuilds them).
rootfs_stamp() {
	local name=$1 rootfs=$2 config=$3
	{
		echo "$name $ARCH $config"
		sha256 "$0"
		(cd "$rootfs" && find . -printf '%p %m %y\n' | LC_ALL=C sort)
		(cd "$rootfs" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum)
	} | sha256sum | cut -d' ' -f1
}

# build_image NAME ROOTFS CONFIG_JSON OUT (re)builds OUT only when its stamp changed.
build_image() {
	local name=$1 rootfs=$2 config=$3 out=$4 stamp want
	stamp=$out.stamp
	want=$(rootfs_stamp "$name" "$rootfs" "$config")
	if [[ -f $out && -f $stamp && $(cat "$stamp") == "$want" ]]; then
		return 0
	fi
	step "building image $name -> ${out#"$REPO"/}"
	make_image "$name" "$rootfs" "$config" "$out"
	echo "$want" >"$stamp"
}

# manifest_digest TAR prints the digest of the (single) manifest named by the tarball's index.json.
manifest_digest() {
	tar -xOf "$1" index.json | grep -o '"digest":"sha256:[0-9a-f]*"' | head -n1 | cut -d'"' -f4
}

containerd_up() {
	[[ -S $CTR_SOCK ]] && ctr --address "$CTR_SOCK" version >/dev/null 2>&1
}

# import_image NAME TAR imports TAR into the cluster's containerd unless it already holds that manifest.
import_image() {
	local name=$1 tar=$2 digest
	digest=$(manifest_digest "$tar")
	if ctr --address "$CTR_SOCK" -n k8s.io images ls "name==$name" 2>/dev/null | grep -qF "$digest"; then
		return 0
	fi
	step "importing $name into the local containerd"
	ctr --address "$CTR_SOCK" -n k8s.io images import "$tar" >/dev/null
}

main() {
	mkdir -p "$IMAGES"
	local stage
	stage=$(mktemp -d "$IMAGES/.stage.XXXXXX")
	# shellcheck disable=SC2064 # expand now: stage is local to main
	trap "rm -rf '$stage'" EXIT

	# The sandbox image: only /pause.
	local pause
	pause=$(pause_binary)
	mkdir -p "$stage/pause"
	cp "$pause" "$stage/pause/pause"
	chmod 0755 "$stage/pause/pause"
	build_image "$PAUSE_IMAGE" "$stage/pause" '{"Entrypoint":["/pause"],"WorkingDir":"/"}' "$IMAGES/pause.tar"

	# braid's image: whatever `make build` produced so far, plus pause and the CNI plugins.
	local root=$stage/braid f
	mkdir -p "$root/usr/bin" "$root/opt/cni/bin"
	cp "$stage/pause/pause" "$root/usr/bin/pause"
	if compgen -G "$BRAID_BIN/*" >/dev/null; then
		for f in "$BRAID_BIN"/*; do
			if [[ -f $f && -x $f ]]; then cp "$f" "$root/usr/bin/"; fi
		done
	else
		step "note: $BRAID_BIN is empty (run 'make build'); localhost/braid:dev holds only pause and CNI plugins"
	fi
	# Not braid's own: braid's installer (the DaemonSet) copies braid and braid-ipam into $CNI_BIN, the node's
	# CNI bin dir, and taking them back from there would change the image each time braid is installed.
	if compgen -G "$CNI_BIN/*" >/dev/null; then
		for f in "$CNI_BIN"/*; do
			case ${f##*/} in braid | braid-*) continue ;; esac
			if [[ -f $f && -x $f ]]; then cp "$f" "$root/opt/cni/bin/"; fi
		done
	fi
	find "$root" -type d -exec chmod 0755 {} + -o -type f -exec chmod 0755 {} +
	build_image "$BRAID_IMAGE" "$root" \
		'{"Env":["PATH=/usr/bin:/opt/cni/bin"],"Cmd":["/usr/bin/pause"],"WorkingDir":"/"}' "$IMAGES/braid.tar"

	if containerd_up; then
		import_image "$PAUSE_IMAGE" "$IMAGES/pause.tar"
		import_image "$BRAID_IMAGE" "$IMAGES/braid.tar"
	fi
}

main "$@"
