# RingKV. `make run` starts a local 3-node cluster; `make test` runs the tests.
GO            ?= go
BIN           := bin
STATICCHECK   := honnef.co/go/tools/cmd/staticcheck@v0.8.2
VERSION       ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS       := -X github.com/ringkv/ringkv/node.Version=$(VERSION)
# Packages whose tests exercise concurrency run under the race detector.
RACE_PKGS     := ./storage/... ./raftfsm/... ./transport/... ./membership/... ./replica/... ./client/... ./cli/... ./node/... ./wire/...

.PHONY: all build run test test-unit test-race test-integration lint bench proto clean

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/kvd ./cmd/kvctl

## run: build, start three kvd nodes on loopback (data in ./.run), Ctrl-C stops them.
run: build
	./scripts/run-cluster.sh

## test: unit, property, in-process Raft and integration tests (real kvd processes).
test: build
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 10m ./...
	$(GO) test -count=1 -race -timeout 10m $(RACE_PKGS)
	cd third_party/hashicorp-raft && $(GO) vet . && $(GO) test -count=1 -race -timeout 5m .
	cd bench/multiraft && $(GO) vet ./... && $(GO) test -count=1 -race -timeout 5m ./...

test-integration: build
	$(GO) test -count=1 -timeout 10m -v ./integration/...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

## bench: a fresh 3-node cluster driven by `kvctl bench` (see docs in README).
bench: build
	./scripts/bench.sh

proto:
	protoc -I api --go_out=api --go_opt=paths=source_relative \
	  --connect-go_out=api --connect-go_opt=paths=source_relative api/ringkv/v1/ringkv.proto

clean:
	rm -rf $(BIN) .run

# Fault suite (jepsen/) and peer comparison (bench/) keep their targets beside their code.
-include jepsen/jepsen.mk
-include bench/bench.mk
