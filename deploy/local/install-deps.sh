#!/usr/bin/env bash
# Installs the Debian packages the local cluster needs: containerd (+ctr), runc, iptables (+ebtables-nft),
# iproute2, openssl, util-linux (nsenter), iputils-ping (the demo's proofs). Idempotent: when every command
# is present it prints nothing and exits at once, so every other script can call it unconditionally.
set -euo pipefail
# shellcheck source=env.sh source-path=SCRIPTDIR
source "$(dirname "$0")/env.sh"

# runc, iptables and ip live in /usr/sbin, which a non-root PATH often lacks.
PATH=$PATH:/usr/sbin:/sbin

# command -> Debian package that provides it
declare -A PKG_OF=(
	[containerd]=containerd
	[ctr]=containerd
	[runc]=runc
	[iptables]=iptables
	[ip]=iproute2
	[openssl]=openssl
	[nsenter]=util-linux
	[ebtables-nft]=iptables # the demo's switch counters
	[ping]=iputils-ping     # the demo's proofs, run inside pods' network namespaces
)

# missing_packages prints, one per line and without duplicates, the packages whose command is absent.
missing_packages() {
	local cmd
	for cmd in "${!PKG_OF[@]}"; do
		command -v "$cmd" >/dev/null 2>&1 || echo "${PKG_OF[$cmd]}"
	done | sort -u
}

main() {
	local -a missing
	mapfile -t missing < <(missing_packages)
	[[ ${#missing[@]} -eq 0 ]] && return 0
	if [[ $(id -u) -ne 0 ]]; then
		die "missing Debian packages: ${missing[*]}; run as root (e.g. sudo $0) to install them"
	fi
	step "installing Debian packages: ${missing[*]}"
	# One update per install keeps the fast path (nothing missing) free of network access. apt's chatter
	# (debconf notes included) goes to a log that is shown only when apt fails.
	local log
	log=$(mktemp)
	if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		--no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
		tail -n 20 "$log" >&2
		rm -f "$log"
		die "apt-get could not install: ${missing[*]}"
	fi
	rm -f "$log"
	mapfile -t missing < <(missing_packages)
	[[ ${#missing[@]} -eq 0 ]] || die "still missing after apt-get install: ${missing[*]}"
}

main "$@"
