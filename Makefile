# The Go that builds banger: the first one new enough for go.mod (PATH,
# /usr/local/go, or the one scripts/go-toolchain.sh installed); on PATH
# too, for the tests that run `go build` themselves.
GOBIN_DIR := $(shell scripts/go-toolchain.sh --find 2>/dev/null)
ifneq ($(GOBIN_DIR),)
export PATH := $(GOBIN_DIR):$(PATH)
endif
GO        ?= $(if $(GOBIN_DIR),$(GOBIN_DIR)/go,go)
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X banger/internal/daemon.Version=$(VERSION)
export CGO_ENABLED = 0

.PHONY: build kubelet test bench fuzz smoke clean fmt vet api-docs

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/banger ./cmd/banger
	@if [ -d cmd/banger-init ]; then $(GO) build -trimpath -ldflags '-s -w' -o bin/banger-init ./cmd/banger-init; fi

# banger-kubelet: the virtual-kubelet node (`banger kubelet` runs it). Its own
# module (kubelet/), so client-go and virtual-kubelet stay out of banger's build.
kubelet:
	cd kubelet && $(GO) build -trimpath -ldflags '-s -w -X main.version=$(VERSION)' -o ../bin/banger-kubelet ./cmd/banger-kubelet

# The concurrent core, run again under the race detector (needs cgo).
RACE_PKGS := ./internal/daemon ./internal/keylock ./internal/store ./internal/portfwd ./internal/vmdns ./internal/agent

# The whole suite; tests that boot VMs need root, qemu and e2fsprogs (see .ci/run).
# Both runs go through testsummary: go test's plain output as it goes (V=1:
# every test's output), then a summary listing every skipped test with its
# reason ("skipped tests: none"), the failed tests and packages. A missing
# prerequisite skips a test here but fails it under CI=true (internal/testenv).
test: build
	$(GO) vet ./...
	$(GO) build -o bin/testsummary ./internal/tools/testsummary
	bin/testsummary $(if $(V),-v) -- \
		$(GO) test -json -count=1 -p 1 -timeout 85m ./... --- \
		env CGO_ENABLED=1 $(GO) test -json -count=1 -race -timeout 20m $(RACE_PKGS) --- \
		sh -c 'cd kubelet && $(GO) vet ./... && $(GO) test -json -count=1 ./...'

bench: build
	./scripts/bench.sh

# Every fuzz target, one after another, one worker each (benchmark-like,
# not CI; figures in BENCHMARKS.md). `go test ./...` runs the seed corpora.
FUZZTIME ?= 1000000x
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) ./scripts/fuzz.sh

smoke: build kubelet
	$(GO) build -trimpath -o bin/banger-fixture ./cmd/banger-fixture
	./smoke/run.sh $(if $(JOBS),-j $(JOBS),)

# docs/api.schema.json and docs/api.md's reference, from the daemon's method
# table and the api types (go test ./internal/tools/apischema checks them).
api-docs:
	$(GO) run ./internal/tools/apischema -w

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin
