# geofs — see README.md. `make run` mounts a fresh site at ./mnt; `make test`
# runs every test (unit, fuzz seeds, integration on real FUSE mounts).

GO      ?= go
BIN     := bin/geofs
SITE    ?= $(CURDIR)/.site
MNT     ?= $(CURDIR)/mnt
FUZZTIME ?= 30s

.PHONY: test-long all build deps run stop test test-race unit integration bench fuzz install clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/geofs

# fuse3 gives mount.fuse3 (for mount -t fuse.geofs) and fusermount3.
deps:
	@command -v mount.fuse3 >/dev/null 2>&1 || { \
	  echo "installing fuse3 (Debian)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3; }

# A fresh site in ./.site mounted at ./mnt, serving in the background.
run: deps build
	@test -f $(SITE)/config.yaml || $(BIN) init --name $$(hostname) $(SITE)
	@mkdir -p $(MNT)
	@if grep -qs " $(MNT) fuse.geofs " /proc/mounts; then echo "already mounted at $(MNT)"; \
	 else $(BIN) mount $(SITE) $(MNT); fi
	@echo "geofs site $$($(BIN) id $(SITE)) is mounted at $(MNT) (store: $(SITE), log: $(SITE)/geofs.log)"
	@echo "stop it with: make stop   (or: umount $(MNT))"

stop:
	umount $(MNT)

test: deps
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m ./...

# Every test with the race detector, the mounted geofs processes included
# (about 5 minutes on 2 cores).
test-race: deps
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /integration)
	GEOFS_RACE=1 $(GO) test -count=1 -timeout 30m ./integration/

unit:
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /integration)

integration: deps
	$(GO) test -count=1 -timeout 20m ./integration/

bench: deps build
	$(GO) run ./integration/bench -geofs $(CURDIR)/$(BIN) -out bench-latest.md

fuzz:
	$(GO) test -run x -fuzz FuzzDecodeVersion -fuzztime $(FUZZTIME) ./store/
	$(GO) test -run x -fuzz FuzzDecodeNode -fuzztime $(FUZZTIME) ./store/
	$(GO) test -run x -fuzz FuzzDecodeEntry -fuzztime $(FUZZTIME) ./store/
	$(GO) test -run x -fuzz FuzzDecodeHeader -fuzztime $(FUZZTIME) ./store/
	$(GO) test -run x -fuzz FuzzDecodeDirent -fuzztime $(FUZZTIME) ./store/
	$(GO) test -run x -fuzz FuzzDecodeLoc -fuzztime $(FUZZTIME) ./store/
	$(GO) test -run x -fuzz FuzzDecodeBlock -fuzztime $(FUZZTIME) ./store/
	$(GO) test -run x -fuzz FuzzDecodeFrame -fuzztime $(FUZZTIME) ./store/
	$(GO) test -run x -fuzz FuzzCut -fuzztime $(FUZZTIME) ./store/cdc/
	$(GO) test -run x -fuzz FuzzReadFrame -fuzztime $(FUZZTIME) ./sync/
	$(GO) test -run x -fuzz FuzzDecodeMessages -fuzztime $(FUZZTIME) ./sync/
	$(GO) test -run x -fuzz FuzzReceiveChunk -fuzztime $(FUZZTIME) ./sync/
	$(GO) test -run x -fuzz FuzzParse -fuzztime $(FUZZTIME) ./internal/bytesize/

# The long randomized convergence test (300 seeds x 500 operations at 3-6
# simulated sites); make test runs a short one.
test-long:
	GEOFS_LONG=1 $(GO) test -count=1 -timeout 60m -run RandomConvergence ./store/

# Puts geofs on PATH, where mount -t fuse.geofs looks for it.
install: build
	install -m 0755 $(BIN) /usr/local/bin/geofs

clean:
	rm -rf bin
