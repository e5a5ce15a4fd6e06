#!/usr/bin/env bash
# Runs every Go fuzz target of the repo for a bounded time (`make fuzz`). Targets are the Fuzz* functions
# `go test -list '^Fuzz'` reports for each package whose tests define one; `go test -fuzz` takes one target of
# one package at a time, so each runs alone:
#   go test -run '^$' -fuzz '^Name$' -fuzztime $FUZZTIME -fuzzminimizetime $FUZZMINIMIZETIME ./pkg
# Prints one line per target (name, package, PASS/FAIL/HUNG, execs, seconds) and exits non-zero if any failed.
# A failing input is written by go to <pkg>/testdata/fuzz/<Name>/; fix the parser, give the file a name that
# says what it is, and keep it as a regression seed. Full output of each run: $BRAID_CACHE/fuzz/<Name>.log.
#   FUZZTIME          fuzzing time per target (default 15s; go's "1000x" form works too)
#   FUZZMINIMIZETIME  time go may spend minimizing an input (default 5s; its own default of 60s eats FUZZTIME)
#   FUZZ_TIMEOUT      hard limit per target, compile included (default 10m): past it the target is HUNG
#   FUZZ_PKGS         packages to search (default ./...)
set -euo pipefail
# shellcheck source=env.sh source-path=SCRIPTDIR
source "$(dirname "$0")/env.sh"

FUZZTIME=${FUZZTIME:-15s}
FUZZMINIMIZETIME=${FUZZMINIMIZETIME:-5s}
FUZZ_TIMEOUT=${FUZZ_TIMEOUT:-10m}
LOGS=$BRAID_CACHE/fuzz
mkdir -p "$LOGS"
cd "$REPO"
# Packages whose TestMain starts envtest skip it when fuzzing; KUBEBUILDER_ASSETS is set for any that do not.
export KUBEBUILDER_ASSETS=${KUBEBUILDER_ASSETS:-$BIN}

# packages prints the import path of every package (under FUZZ_PKGS) whose test files define a Fuzz function.
packages() {
	# shellcheck disable=SC2086 # FUZZ_PKGS is a list of patterns
	go list -f '{{.ImportPath}} {{.Dir}} {{join .TestGoFiles " "}} {{join .XTestGoFiles " "}}' ${FUZZ_PKGS:-./...} |
		while read -r pkg dir files; do
			[ -n "$files" ] || continue
			# shellcheck disable=SC2086 # Go file names have no spaces
			if (cd "$dir" && grep -qE '^func Fuzz[A-Za-z0-9_]*\(' $files); then echo "$pkg"; fi
		done
}

pkgs=$(packages) || die "go list ${FUZZ_PKGS:-./...} failed"
targets=()
for pkg in $pkgs; do
	list=$(go test -list '^Fuzz' "$pkg" 2>&1) || die "cannot list the fuzz targets of $pkg: $list"
	while read -r name; do
		targets+=("$name $pkg")
	done < <(grep -E '^Fuzz' <<<"$list" || true)
done
[ ${#targets[@]} -gt 0 ] || die "no fuzz targets found in ${FUZZ_PKGS:-./...}"
step "fuzzing ${#targets[@]} targets for $FUZZTIME each"

failed=0
for t in "${targets[@]}"; do
	read -r name pkg <<<"$t"
	log=$LOGS/$name-$(basename "$pkg").log
	start=$SECONDS
	rc=0
	# timeout signals the whole process group, so a hung fuzz worker goes too.
	timeout -k 30s "$FUZZ_TIMEOUT" go test -run '^$' -fuzz "^$name\$" -fuzztime "$FUZZTIME" \
		-fuzzminimizetime "$FUZZMINIMIZETIME" "$pkg" >"$log" 2>&1 || rc=$?
	case $rc in
	0) result=PASS ;;
	124 | 137) result=HUNG ;;
	*) result=FAIL ;;
	esac
	execs=$(grep -oE 'execs: [0-9]+' "$log" | tail -1 | cut -d' ' -f2 || true)
	printf '%-22s %-52s %-4s execs=%-9s %3ss\n' "$name" "${pkg#github.com/braid-cni/braid/}" "$result" "${execs:-?}" \
		$((SECONDS - start))
	if [ $result != PASS ]; then
		failed=$((failed + 1))
		grep -E 'Failing input written to|fuzz_test.go:[0-9]+:|^panic:' "$log" | sed 's/^/    /' | head -5 || true
		echo "    full output: $log"
	fi
done
if [ $failed -gt 0 ]; then
	die "$failed of ${#targets[@]} fuzz targets failed"
fi
step "all ${#targets[@]} fuzz targets passed"
