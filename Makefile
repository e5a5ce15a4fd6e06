# braid — the two commands a newcomer needs are `make demo` and `make test`; both install what they need.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

export PATH := /usr/local/go/bin:$(PATH)
export BRAID_CACHE ?= $(CURDIR)/.cache
CACHE   := $(BRAID_CACHE)
BIN     := $(CACHE)/bin
OUT     := $(CACHE)/braid-bin
LOCAL   := deploy/local
BINARIES := braid=meta-plugin/cmd/braid braid-shim=meta-plugin/cmd/braid-shim braid-ipam=ipam-server/cmd/braid-ipam \
            braid-ipam-api=ipam-server/cmd/braid-ipam-api \
            braid-ipam-server=ipam-server/cmd/braid-ipam-server braid-sriov-dp=sriov-device/cmd/braid-sriov-dp
# Packages named e2e need the local cluster; `make test` runs them last, one at a time (the cluster's own
# e2e first: it proves cluster-up and cluster-down).
E2E_PKGS = ./deploy/local/e2e $(filter-out ./deploy/local/e2e,$(shell go list -f '{{if eq .Name "e2e"}}./{{.ImportPath}}{{end}}' ./... | sed 's|github.com/braid-cni/braid/||'))

.PHONY: build test test-unit test-e2e e2e soak demo demo-report demo-down generate verify lint fuzz images cluster-up cluster-down bench deps tools clean

## build: compile braid's binaries into .cache/braid-bin (static and stripped: the CNI ones start per call)
build:
	@mkdir -p $(OUT)
	@for b in $(BINARIES); do CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o $(OUT)/$${b%%=*} ./$${b#*=}; done
	@echo "built: $$(ls $(OUT) | tr '\n' ' ')"

## deps: Debian packages and every pinned tool (Kubernetes, etcd, crictl, CNI plugins, controller-gen, golangci-lint)
deps:
	@$(LOCAL)/install-deps.sh
	@$(LOCAL)/build-tools.sh

## test: everything — unit, privileged netns, envtest and e2e tests; installs what it needs first
test: deps verify test-unit test-e2e

test-unit: deps
	KUBEBUILDER_ASSETS=$(BIN) go test -count=1 -timeout 20m $$(go list -f '{{if ne .Name "e2e"}}{{.ImportPath}}{{end}}' ./...)

# One local cluster at a time on this machine: e2e runs hold this lock (so do developers' manual sessions).
CLUSTER_LOCK := /tmp/braid-cluster.lock
test-e2e: deps images
	KUBEBUILDER_ASSETS=$(BIN) BRAID_E2E=1 flock -o $(CLUSTER_LOCK) go test -count=1 -p 1 -timeout 30m -v $(E2E_PKGS)

## e2e: braid installed from deploy/ on the local cluster (deploy/e2e): the demo's proofs, restarts, scaling
e2e: deps images
	KUBEBUILDER_ASSETS=$(BIN) BRAID_E2E=1 flock -o $(CLUSTER_LOCK) go test -count=1 -timeout 30m -v ./deploy/e2e

## soak: pods created and deleted for SOAK_DURATION (default 3m; SOAK_SEED repeats a run) on the local cluster
## while the IPAM leader, kube-apiserver and braid's pod are killed at random; then no duplicate, no leak (deploy/soak)
soak: deps images
	@mkdir -p $(CACHE)/soak
	@rc=0; BRAID_SOAK=1 SOAK_DURATION=$(or $(SOAK_DURATION),3m) SOAK_SEED=$(SOAK_SEED) flock -o $(CLUSTER_LOCK) \
		go test -count=1 -timeout 30m -v ./deploy/soak 2>&1 | tee $(CACHE)/soak/soak.log || rc=$$?; \
		grep '^SOAK ' $(CACHE)/soak/soak.log | tail -n1 || true; exit $$rc

# `flock -o`: the cluster's daemons must not inherit the lock, since the demo leaves them running.
## demo: builds, starts the local cluster, simulates the node's three underlay networks, installs braid from
## deploy/ with kubectl, applies deploy/examples, prints what each pod got and proves it; leaves it running
demo:
	@flock -o $(CLUSTER_LOCK) $(LOCAL)/demo.sh

## demo-report: the demo's report and proofs again; demo-down: removes the demo, the cluster and the underlay
demo-report:
	@flock -o $(CLUSTER_LOCK) $(LOCAL)/demo.sh report

demo-down:
	@flock -o $(CLUSTER_LOCK) $(LOCAL)/demo.sh down

## generate: deepcopy and CRD YAML from the API types in crds/
generate:
	@$(LOCAL)/build-tools.sh codegen
	$(BIN)/controller-gen object paths=./crds/...
	$(BIN)/controller-gen crd paths=./crds/... output:crd:dir=./crds

## verify: regenerate and fail if any generated file changed (or gofmt/go.mod are stale)
verify: generate
	@go mod tidy -diff >/dev/null || { echo "verify: go.mod/go.sum are stale: run 'go mod tidy'" >&2; exit 1; }
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "verify: gofmt needed on: $$(gofmt -l $$(git ls-files '*.go'))" >&2; exit 1; }
	@git diff --exit-code --stat -- crds/ || { echo "verify: generated files are stale: run 'make generate' and commit" >&2; exit 1; }
	@test -z "$$(git ls-files --others --exclude-standard crds/)" || { echo "verify: untracked generated files in crds/: $$(git ls-files --others --exclude-standard crds/)" >&2; exit 1; }

## lint: golangci-lint, pinned in deploy/local/tools/lint
lint:
	@$(LOCAL)/build-tools.sh lint
	$(BIN)/golangci-lint run ./...

## fuzz: every Go fuzz target (the parsers of user text) for FUZZTIME each (default 15s); one line per target
fuzz:
	@$(LOCAL)/fuzz.sh

## images: OCI image tarballs of braid's binaries and the sandbox image, imported into the local containerd
images: build
	@$(LOCAL)/images.sh

cluster-up: deps
	@$(LOCAL)/cluster-up.sh

cluster-down:
	@$(LOCAL)/cluster-down.sh

## bench: every benchmark target of the components (each prints BENCH lines)
# Each component adds its own targets in <component>/component.mk (e.g. BENCH_TARGETS += bench-meta).
BENCH_TARGETS :=
include $(wildcard meta-plugin/component.mk ipam-server/component.mk sriov-device/component.mk)
bench: $(BENCH_TARGETS)
	@[ -n "$(BENCH_TARGETS)" ] || echo "bench: no component benchmarks yet"

clean: cluster-down
	rm -rf $(CACHE)
