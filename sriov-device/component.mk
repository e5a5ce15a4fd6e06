# sriov-device targets, included by the top Makefile.
BENCH_TARGETS += bench-sriov

.PHONY: bench-sriov
## bench-sriov: braid-sriov-dp on a generated tree of 1024 VFs (discovery, Allocate over gRPC); prints the BENCH line last
bench-sriov:
	@mkdir -p $(CACHE)
	@BRAID_BENCH_SRIOV=1 go test -count=1 -timeout 10m -run '^TestBenchSRIOV$$' -v ./sriov-device/internal/plugin/ \
		> $(CACHE)/bench-sriov.log 2>&1 || { cat $(CACHE)/bench-sriov.log >&2; exit 1; }
	@grep '^sriov: ' $(CACHE)/bench-sriov.log
	@grep '^BENCH sriov ' $(CACHE)/bench-sriov.log | tail -n 1
