GO        ?= go
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X banger/internal/daemon.Version=$(VERSION)
export CGO_ENABLED = 0

.PHONY: build test bench smoke clean fmt vet

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/banger ./cmd/banger
	@if [ -d cmd/banger-init ]; then $(GO) build -trimpath -ldflags '-s -w' -o bin/banger-init ./cmd/banger-init; fi

# The whole suite; tests that boot VMs need root, qemu and e2fsprogs (see .ci/run).
test: build
	$(GO) vet ./...
	$(GO) test -count=1 -p 1 -timeout 60m ./...
	# The concurrent core again under the race detector (needs cgo).
	CGO_ENABLED=1 $(GO) test -count=1 -race -timeout 20m ./internal/daemon ./internal/keylock ./internal/store ./internal/portfwd ./internal/vmdns ./internal/agent

bench: build
	./scripts/bench.sh

smoke: build
	$(GO) build -trimpath -o bin/banger-fixture ./cmd/banger-fixture
	./smoke/run.sh $(if $(JOBS),-j $(JOBS),)

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin
