# lathe — the two commands of the quickstart:
#   make demo   installs what is missing, runs the flagship recipe (recipes/mnist-lenet300-kd-prune-qat.hcl),
#               prints where the summary is; DEVICE=cuda runs it on the GPU, WORKERS=2 on embedded
#               NATS with 2 local workers (MICRO=2: --micro-shards 2, one micro-shard a worker)
#   make test   installs what is missing, runs go vet and every test
GO      ?= go
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PKGS := libopenblas0-pthread dataset-fashion-mnist nats-server chromium \
            fortunes fortunes-de fortunes-es fortunes-it fortunes-pl fortunes-ru fortunes-cs fortunes-br fortunes-zh \
            bible-kjv bible-kjv-text libonnx-testdata
JSREADER := checkpoint/testdata/jsreader
ORT      := infer/testdata/ort

.PHONY: demo test deps build bench
deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	command -v node >/dev/null && command -v npm >/dev/null || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi
	$(GO) mod download
	@# The JavaScript Arrow reader the checkpoint tests open lathe's files with.
	@[ -d $(JSREADER)/node_modules/apache-arrow ] || npm ci --prefix $(JSREADER) --no-audit --no-fund --silent
	@# onnxruntime (CPU) for the ONNX export tests; its install script would fetch GPU
	@# binaries from a host that cannot be reached, and the CPU library is in the package.
	@[ -d $(ORT)/node_modules/onnxruntime-node ] || npm ci --prefix $(ORT) --ignore-scripts --no-audit --no-fund --silent

# -buildvcs=true stamps the commit into the binary (manifest.json's git_commit) even where
# GOFLAGS turns stamping off; outside a git checkout there is nothing to stamp.
VCS := $(if $(wildcard .git),-buildvcs=true)
build: deps
	$(GO) build $(VCS) -o bin/coordinator ./cmd/coordinator
	$(GO) build $(VCS) -o bin/lathe ./cmd/lathe
	$(GO) build $(VCS) -o bin/worker ./cmd/worker

DEVICE ?= cpu
WORKERS ?=
MICRO   ?=
demo: build
	./bin/coordinator --recipe recipes/mnist-lenet300-kd-prune-qat.hcl --device $(DEVICE) $(if $(WORKERS),--workers $(WORKERS)) $(if $(MICRO),--micro-shards $(MICRO))

test: deps
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 30m ./...

# Training speed side by side with PyTorch (A B A B); see BENCHMARKS.md.
bench: deps
	bench/train-speed.sh
