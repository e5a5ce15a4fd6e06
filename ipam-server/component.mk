# ipam-server targets, included by the top Makefile.
BENCH_TARGETS += bench-ipam

.PHONY: bench-ipam
## bench-ipam: braid-ipam vs whereabouts through one API server; prints BENCH lines, braid's 1000-pod line last
bench-ipam: deps
	@$(LOCAL)/build-tools.sh whereabouts
	@KUBEBUILDER_ASSETS=$(BIN) BRAID_BENCH=1 go test -count=1 -v -timeout 60m -run TestBenchIPAM ./ipam-server/internal/bench/ \
		| tee $(CACHE)/bench-ipam.log | grep '^BENCH'
