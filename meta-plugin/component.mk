# meta-plugin's make targets; the top Makefile includes this file.
BENCH_TARGETS += bench-meta
META_BENCH_DIR := $(CACHE)/bench-meta

.PHONY: bench-meta test-meta

## test-meta: the meta-plugin's tests: parsing, fuzz seeds, installer, and (as root) real netns + envtest
test-meta: deps
	KUBEBUILDER_ASSETS=$(BIN) go test -count=1 -timeout 20m ./meta-plugin/...

## bench-meta: ADD+DEL of a pod with eth0 + 2 extra networks, BRAID_BENCH_N times (default 300), in real netns
## with the reference plugins and a real kube-apiserver; the last line is `BENCH meta ...`
bench-meta: deps
	@mkdir -p $(META_BENCH_DIR)
	@CGO_ENABLED=0 go build -trimpath -o $(META_BENCH_DIR)/braid ./meta-plugin/cmd/braid
	@BRAID_BENCH=1 BRAID_BENCH_N=$${BRAID_BENCH_N:-300} BRAID_BIN=$(META_BENCH_DIR)/braid KUBEBUILDER_ASSETS=$(BIN) \
		go test -count=1 -timeout 30m -run '^TestBenchMeta$$' -v ./meta-plugin/internal/plugin/ > $(META_BENCH_DIR)/bench.log 2>&1 \
		|| { cat $(META_BENCH_DIR)/bench.log >&2; echo "bench-meta: failed (log: $(META_BENCH_DIR)/bench.log)" >&2; exit 1; }
	@grep -q '^BENCH meta ' $(META_BENCH_DIR)/bench.log || { cat $(META_BENCH_DIR)/bench.log >&2; echo "bench-meta: no BENCH line" >&2; exit 1; }
	@grep '^BENCH-INFO meta' $(META_BENCH_DIR)/bench.log
	@grep '^BENCH meta ' $(META_BENCH_DIR)/bench.log | tail -n1
