# Targets a newcomer can guess. Every recipe runs under strict bash flags.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules

GO        ?= go
PKGS      ?= ./...
FUZZTIME  ?= 1m
TESTFLAGS ?=
# Scenario files for `make sim` / `make vm`.
SCENARIO  ?= scenarios
# Extra flags for `make vm`, e.g. VMFLAGS=--measure or --keep.
VMFLAGS   ?=

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | column -t -s $$'\t'

.PHONY: sim
sim: ## run every scenario in scenarios/ on the embedded simulator
ifeq ($(wildcard cmd/clusterlab),)
	@echo "make sim: the scenario runner (cmd/clusterlab) has not landed yet: no scenario runs, nothing passed."
	@echo "          The simulator itself is tested by 'make test' (package sim)."
else
	$(GO) run ./cmd/clusterlab sim $(SCENARIO)
endif

.PHONY: netns
netns: ## run scenarios/ with real clusterd daemons in network namespaces (root)
	$(GO) build -o .bin/clusterd ./cmd/clusterd
	$(GO) run ./cmd/clusterlab netns --clusterd .bin/clusterd $(SCENARIO)

.PHONY: vm
vm: vm-deps ## run scenarios/vm on QEMU virtual machines (root; installs QEMU on first use)
	$(GO) run ./cmd/clusterlab vm $(VMFLAGS) $(if $(filter scenarios,$(SCENARIO)),scenarios/vm,$(SCENARIO))

# QEMU and mkfs.ext4 from Debian's packages, on first use (make vm, make bench).
.PHONY: vm-deps
vm-deps:
	@command -v qemu-system-x86_64 >/dev/null && command -v mkfs.ext4 >/dev/null || { \
	  echo "make: installing qemu-system-x86 and e2fsprogs (first use)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-x86 e2fsprogs >/dev/null; }

.PHONY: test
test: ## run every test once (under 10 minutes)
	$(GO) test -count=1 -timeout 10m $(TESTFLAGS) $(PKGS)

.PHONY: soak
soak: ## long runs by hand: 1M RPCs, 5,000 CLMS fault seeds, 2,000 swarm seeds, 50 determinism seeds
	SOAK=1 $(GO) test -count=1 -timeout 3h -run 'Soak|Determinism|CLMS|Swarm' $(PKGS)
	$(GO) run ./cmd/clusterlab swarm --seeds 2000 --jobs 2

.PHONY: lint
lint: ## gofmt, go vet, staticcheck and the core-purity rule
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) tool staticcheck $(PKGS)
	$(GO) test -count=1 ./internal/purity/

.PHONY: bench
bench: vm-deps ## every benchmark, ratios to baselines of the same run, peers side by side (root); writes docs/BENCHMARKS.md (QUICK=1: short)
	$(if $(QUICK),BENCH_QUICK=1) $(GO) test -run '^$$' -bench . -benchmem -count=1 -timeout 60m $(if $(QUICK),-benchtime 200ms) ./sim/ ./ics/ ./clms/ ./scenarios/lab/ | tee bench.out
	$(GO) run ./cmd/clusterlab vm --measure scenarios/vm/form-5.yaml scenarios/vm/ci-3.yaml | tee -a bench.out
	$(GO) build -o .bin/clusterd ./cmd/clusterd
	$(GO) build -o .bin/failbench ./internal/failbench/cmd/failbench
	mkdir -p docs/bench
	.bin/failbench -clusterd .bin/clusterd $(if $(QUICK),-quick) -json docs/bench/failbench.json | tee -a bench.out
	$(GO) run ./internal/benchreport -md docs/BENCHMARKS.md -label "make bench$(if $(QUICK), QUICK=1)" < bench.out

.PHONY: fuzz
fuzz: ## run every fuzz target for FUZZTIME (default 1m) each, and keep the corpus in testdata/
	@cache=$$($(GO) env GOCACHE)/fuzz; mod=$$($(GO) list -m); \
	  for d in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -r -n1 dirname | sort -u); do \
	    pkg=$$mod/$${d#./}; \
	    for f in $$(grep -h '^func Fuzz' $$d/*_test.go | sed -E 's/^func (Fuzz[A-Za-z0-9_]*).*/\1/'); do \
	      echo "== $$d $$f ($(FUZZTIME))"; \
	      $(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) $$d; \
	      if [ -d "$$cache/$$pkg/$$f" ]; then \
	        mkdir -p $$d/testdata/fuzz/$$f && cp -n "$$cache/$$pkg/$$f"/* $$d/testdata/fuzz/$$f/ 2>/dev/null || true; \
	      fi; \
	    done; \
	  done

.PHONY: clean
clean: ## remove build and bench outputs
	rm -rf bench.out .bin
