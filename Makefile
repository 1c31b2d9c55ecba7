# Alknet — build, test, benchmark and run a node.
# `make run` serves a node from ./.alknet-dev; `make test` is what CI runs.

GO        ?= go
BIN       := $(CURDIR)/bin
DATA_DIR  ?= $(CURDIR)/.alknet-dev
GOFLAGS   ?=
# Address of the `make run` node; LISTEN=0.0.0.0:4433 serves other machines.
LISTEN    ?= 127.0.0.1:4433
# Recorded in the binaries for `alknet version`.
COMMIT    ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS   := -X main.commit=$(COMMIT)
# Fuzz seed corpora run as ordinary tests; FUZZTIME>0 fuzzes each target.
FUZZTIME  ?= 0

.PHONY: all build test test-unit test-integration fuzz bench run lint proto clean

all: build

## build: every binary (alknet, plugins, helpers) into ./bin
build:
	@mkdir -p $(BIN)
	$(GO) build $(GOFLAGS) -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/... ./plugins/...

## test: lint, unit tests, fuzz seed corpora and integration tests (CI)
# Screenshots and other files tests keep for a person to look at.
ARTIFACTS ?= $(CURDIR)/test-artifacts

test: lint
	ALKNET_TEST_ARTIFACTS=$(ARTIFACTS) $(GO) test $(GOFLAGS) -race -count=1 -timeout 14m ./...

test-unit:
	$(GO) test $(GOFLAGS) -count=1 ./core/... ./cmd/...

test-integration:
	$(GO) test $(GOFLAGS) -count=1 -v ./integration/...

## fuzz: run every fuzz target for FUZZTIME each (e.g. make fuzz FUZZTIME=30s)
fuzz:
	@scripts/fuzz.sh $(if $(filter 0,$(FUZZTIME)),10s,$(FUZZTIME))

## bench: benchmark suite; prints each figure next to its anchor and the ratio
bench: build
	$(GO) run ./scripts/bench

## run: serve a node with every built plugin on the embedded default config,
## on 127.0.0.1:4433 (LISTEN=… to change), and print commands that try it
run: build
	$(BIN)/alknet serve --data-dir $(DATA_DIR) --listen $(LISTEN) --next-steps

## lint: gofmt and go vet
lint:
	@out=$$(gofmt -l core cmd plugins proto scripts integration internal | grep -v '\.pb\.go$$' || true); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

## proto: regenerate proto/ Go code with pinned generator versions
proto:
	@scripts/proto.sh

clean:
	rm -rf $(BIN)
