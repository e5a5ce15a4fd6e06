# ipam-server targets, included by the top Makefile.
BENCH_TARGETS += bench-allocator bench-ipam

.PHONY: bench-ipam bench-allocator
## bench-ipam: braid-ipam vs whereabouts through one API server; prints BENCH lines, braid's 1000-pod line last
bench-ipam: deps
	@$(LOCAL)/build-tools.sh whereabouts
	@KUBEBUILDER_ASSETS=$(BIN) BRAID_BENCH=1 go test -count=1 -v -timeout 60m -run TestBenchIPAM ./ipam-server/internal/bench/ \
		| tee $(CACHE)/bench-ipam.log | grep '^BENCH'

## bench-allocator: the allocator alone, one pod's allocation and release in an IPv6 pool that has served
## 200000 pods before it (the time must not grow with the pool's history)
bench-allocator:
	@go test -count=1 -run '^$$' -bench BenchmarkAllocateInABigPool -benchtime 200000x ./ipam-server/internal/allocator/ \
		| awk '/^BenchmarkAllocateInABigPool/ {print "BENCH allocator pool=2001:db8::/64 pods=" $$2 " us_per_pod=" $$3/1000}'
