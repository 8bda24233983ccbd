# Two commands do all the set-up on a fresh machine:
#   make demo   the main job on the embedded default (moto, apply, no-op plan, drift, fix)
#   make test   every test (.ci/run calls exactly this)
#   make image  the container images (service and reconciler), with podman, from the release binaries
SHELL := /bin/bash

# One target directory, outside the clone when $HOME is writable, so CI and later clones
# reuse the (large) AWS SDK build. Falls back to ./target.
CACHE_TARGET := $(HOME)/.cache/fargate-reconciler/target
export CARGO_TARGET_DIR ?= $(shell mkdir -p $(CACHE_TARGET) 2>/dev/null && echo $(CACHE_TARGET) || echo $(CURDIR)/target)
export CARGO_TERM_COLOR ?= never

.PHONY: demo test test-crash build moto schema bench bench-service bench-run fmt clippy image fuzz

build:
	cargo build --workspace --tests

moto:
	bash tests/emulator/install-moto.sh >/dev/null

demo:
	bash examples/demo.sh

test: moto build
	@if cargo nextest --version >/dev/null 2>&1; then \
	  cargo nextest run --workspace --no-fail-fast; \
	else \
	  cargo test --workspace --no-fail-fast; \
	fi

# Crash safety at every crash point (make test tries every 6th): apply from zero, destroy and a replacement
# of the whole stack, SIGKILLed after each mutating call, then run again (~3 min).
test-crash: moto build
	set -o pipefail; RECONCILER_CRASH_STRIDE=1 cargo nextest run -p reconciler --test reconciler_tests --no-capture \
	  -E 'test(/^aws_behaviour::.*killed_after_any_mutation/)' 2>&1 | grep -E 'crash points|PASS|FAIL|panicked'

schema:
	cargo build --workspace --quiet && $(CARGO_TARGET_DIR)/debug/reconciler schema > specs/schema.json \
	  && $(CARGO_TARGET_DIR)/debug/reconciler schema --plan > specs/plan.schema.json

fmt:
	cargo fmt --all

clippy:
	cargo clippy --workspace --tests -- -D warnings

# API calls and round trips of plan / apply / an image change / destroy (also under the AWS
# model, and five stacks at once) against moto with a
# fixed latency per call (not a test; the table goes in the README, figures in
# bench/results.json). The `bench` profile (Cargo.toml): optimised like the image users run,
# without its LTO; the first run builds the SDKs optimised (about 18 minutes on 2 cores).
bench: moto
	cargo bench -p reconciler --bench roundtrips

# Fuzzing (not part of `make test`): every target in fuzz/ for FUZZ_SECONDS (default 600)
# each, two at a time; the table goes in the README ("Reliability"). Installs cargo-fuzz when
# missing; needs the nightly toolchain.
FUZZ_SECONDS ?= 600
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash fuzz/run.sh

# Signed /event load against the release binary (not a test; numbers go in the README).
bench-service:
	cargo bench --profile release -p benchling-webhook --bench webhook

# FROM scratch, nothing pulled (image/build.sh, service/Containerfile): tagged
# $(IMAGE):<crate version> and $(IMAGE):latest. Installs podman and runc when missing.
IMAGE ?= benchling-webhook
image:
	cargo build --release -p benchling-webhook -p reconciler --locked
	@version=$$(cargo pkgid -p benchling-webhook | sed 's/.*[@#]//'); \
	bash image/build.sh $(CARGO_TARGET_DIR)/release/benchling-webhook service/Containerfile $(IMAGE):$$version $(IMAGE):latest
	@version=$$(cargo pkgid -p reconciler | sed 's/.*[@#]//'); \
	bash image/build.sh $(CARGO_TARGET_DIR)/release/reconciler reconciler/Containerfile reconciler:$$version reconciler:latest

# 500 `reconciler run` passes against moto: RSS and CPU at pass 1, 10, 100 and 500 (not a test;
# numbers go in the README).
bench-run: build
	bash bench/run-passes.sh specs/prod.yaml 500
