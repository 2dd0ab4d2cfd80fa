# kube-oidc-issuer — see README.md. `make run` and `make test` are the two commands a newcomer needs.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c

BIN        ?= bin/kube-oidc-issuer
VERSION    ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT     ?= $(shell git rev-parse HEAD 2>/dev/null)
PKG        := github.com/kube-oidc-issuer/kube-oidc-issuer
LDFLAGS    := -s -w -X $(PKG)/internal/version.version=$(VERSION) -X $(PKG)/internal/version.commit=$(COMMIT)
# grpcnotrace: gRPC (the KEP-740 signer) otherwise links golang.org/x/net/trace and with it
# html/template, which keeps the linker from dropping unused methods: 58 MB instead of 37 MB, and
# ~14 MiB more resident memory at start. The Dockerfile builds through `make build`, so these flags
# are written once; the integration harness passes the same tag (deploy/test checks both builds).
GO_TAGS    := grpcnotrace
IMAGE      ?= kube-oidc-issuer:$(VERSION)
# The whole suite, integration included, on a 2-core machine: well under CI's 90 minutes.
TEST_TIMEOUT ?= 30m

.PHONY: all build lint test test-deploy test-unit vet fmt-check bench bench-serve bench-flood bench-mirror bench-signer bench-fleet run image test-binaries clean docs doctor test-soak

all: build ## The default: build

.PHONY: help
help: ## This list: one line per target, from the comment after the target's dependencies
	@grep -hE '^[A-Za-z0-9_.-]+:[^=]*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN { FS = ":[^#]*## " } { printf "  %-14s %s\n", $$1, $$2 }'

build: ## Static binary with version information
	CGO_ENABLED=0 go build -trimpath -tags '$(GO_TAGS)' -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/kube-oidc-issuer

test-binaries: ## Build (or find cached) kube-apiserver, etcd and MinIO for the integration tests
	hack/build-test-binaries.sh kube-apiserver etcd minio >/dev/null

fmt-check: ## Fail when a Go file needs gofmt (lists them)
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet: ## go vet over the issuer's module and deploy/test's
	go vet ./...
	cd deploy/test && go vet ./...

# staticcheck is pinned by hack/tools/staticcheck/go.mod and built like the test binaries (about a
# minute the first time, then cached); its default checks, with no exceptions configured.
lint: ## staticcheck (pinned in hack/tools/staticcheck) over the issuer's module
	"$$(hack/build-test-binaries.sh staticcheck)/staticcheck" ./...

test: fmt-check vet lint test-binaries ## Everything: unit + integration against a real kube-apiserver, with -race
	go test -race -count=1 -timeout $(TEST_TIMEOUT) ./...
	$(MAKE) --no-print-directory test-deploy

# deploy/test is a module of its own (Helm and kustomize stay out of the issuer's go.mod). It uses
# the root module through a replace: after changing the root go.mod, run `cd deploy/test && go mod tidy`.
test-deploy: test-binaries ## Apply the kustomize flavours and the Helm chart to a real kube-apiserver; check RBAC and the image build
	cd deploy/test && go test -race -count=1 -timeout $(TEST_TIMEOUT) ./...

test-unit: ## Unit tests only (no kube-apiserver)
	go test -race -count=1 -short ./...
	cd deploy/test && go test -race -count=1 -short ./...

# Not part of `make test`: about 7 minutes of faults under load, then FUZZTIME (default 5m) per
# fuzz target. Both halves always run; the target fails if either did. Figures: docs/soak.md.
test-soak: test-binaries ## Fault and soak suite: JWKS under load through restarts, outages and garbage Secrets; then every fuzz target for FUZZTIME (default 5m) each
	@start=$$(date +%s); rc=0; \
	  KOI_SOAK=1 go test -count=1 -v -run '^TestSoak$$' -timeout 60m ./integration/ || rc=1; \
	  hack/fuzz-all.sh || rc=1; \
	  echo "make test-soak: $$(( $$(date +%s) - start ))s in total (exit $$rc)"; exit $$rc

bench: ## Go benchmarks (handler allocations, rendering, PEM parsing); Secret→JWKS propagation is in bench-serve
	go test -run '^$$' -bench . -benchmem ./...

bench-serve: test-binaries ## wrk load run of `serve` against a bare net/http baseline; prints req/s, p99, ratio, RSS
	hack/bench-serve.sh

bench-flood: test-binaries ## 5,000 idle connections to the release binary (plain, TLS) and a flood against a low open-file limit; prints RSS, held connections, probe latency
	hack/bench-flood.sh

bench-signer: test-binaries ## KEP-740 signer: Sign p50/p99 over the socket (RS256, ES256; 1 and 50 callers); TokenRequest throughput with the signer vs a key file; FetchKeys per minute
	go run ./integration/cmd/benchsigner

bench-fleet: test-binaries ## fleet mode, 1,000 Cluster API clusters in one process: start → ready, RSS, Secret change → served p99, JWKS req/s vs single-cluster serve
	hack/bench-fleet.sh

bench-mirror: test-binaries ## Secret change → both documents updated in S3 (moto and MinIO); prints min/p50/p90/max
	go run ./integration/cmd/benchmirror

run: ## Local stack: real kube-apiserver + etcd, a signing-key Secret, and `serve` against it
	@start=$$(date +%s); \
	  echo "==> kube-apiserver and etcd (make run needs no MinIO): a first build from the Go module proxy takes 5-15 minutes on 2 cores, then they are cached"; \
	  hack/build-test-binaries.sh kube-apiserver etcd >/dev/null; \
	  built=$$(date +%s); echo "==> binaries ready in $$((built - start))s; starting the stack (Ctrl-C stops it)"; \
	  rc=0; go run ./integration/cmd/devstack || rc=$$?; \
	  echo "==> make run: binaries $$((built - start))s, stack (build + run) $$(( $$(date +%s) - built ))s"; exit $$rc

image: ## Container image (needs a Docker engine)
	docker build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) -t $(IMAGE) .

docs: ## Regenerate docs/configuration.md from the command tree (a test fails when it is stale)
	go run ./cmd/kube-oidc-issuer gen-docs > docs/configuration.md.tmp && mv docs/configuration.md.tmp docs/configuration.md

doctor: build ## Diagnose a live issuer: make doctor ISSUER_URL=https://... [DOCTOR_ARGS='--token t --aws']
	$(BIN) doctor --issuer-url '$(ISSUER_URL)' $(DOCTOR_ARGS)

clean: ## Remove bin/
	rm -rf bin
