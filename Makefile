# walvault: the two commands a newcomer needs are `make test` and `make demo`.

SHELL := /bin/bash
VENV := .venv
PYTHON ?= python3
export CARGO_TARGET_DIR ?= $(CURDIR)/target

# `cargo lambda` is the venv's cargo-lambda (from PyPI).
CARGO_LAMBDA := PATH="$(CURDIR)/$(VENV)/bin:$$PATH" cargo lambda

.PHONY: test demo bench deps lint unit infra-test lambda-local lambda-build

## Installs what is missing, then runs every check and every test.
test: deps lint infra-test
	@mkdir -p $(CARGO_TARGET_DIR)
	cargo build --workspace --bins --examples --locked
	set -o pipefail; cargo test --workspace --locked 2>&1 | tee $(CARGO_TARGET_DIR)/test-output.log
	$(MAKE) --no-print-directory lambda-local lambda-build
	@awk '/^test result:/ {passed += $$4; failed += $$6} /^# pass / {passed += $$3} /^# fail / {failed += $$3} END {printf "%d passed, %d failed\n", passed, failed}' $(CARGO_TARGET_DIR)/test-output.log $(CARGO_TARGET_DIR)/infra-test-output.log $(CARGO_TARGET_DIR)/lambda-local-output.log

## `cargo lambda watch` + `cargo lambda invoke` with events/ against the
## stand-ins. Outside `cargo test`: a nested cargo would wait on its build lock.
## Built with the whole workspace (`cargo run -p` would unify features anew
## and rebuild the SDK crates).
lambda-local: deps
	@mkdir -p $(CARGO_TARGET_DIR)
	cargo build --workspace --bins --examples --locked --quiet
	set -o pipefail; $(CARGO_TARGET_DIR)/debug/examples/lambda_local 2>&1 | tee $(CARGO_TARGET_DIR)/lambda-local-output.log

## The deployable functions: arm64 `bootstrap` files for provided.al2023 in
## $(CARGO_TARGET_DIR)/lambda/, then a synth of the stack that packages them.
lambda-build: deps
	$(CARGO_LAMBDA) build --release --arm64 --locked -p compress -p retention
	@for f in compress retention; do \
		file "$(CARGO_TARGET_DIR)/lambda/$$f/bootstrap" | grep -q 'ARM aarch64' || { echo "$$f/bootstrap is not an arm64 executable"; exit 1; }; \
		echo "$$f/bootstrap: $$(stat -c %s "$(CARGO_TARGET_DIR)/lambda/$$f/bootstrap") bytes"; \
	done
	cd infra && rm -rf cdk.out && npx cdk synth --no-notices --quiet -c lambdaCodeDir=$(CARGO_TARGET_DIR)/lambda -o cdk.out
	@for f in compress retention; do \
		find infra/cdk.out -name bootstrap -exec cmp -s {} "$(CARGO_TARGET_DIR)/lambda/$$f/bootstrap" \; -print | grep -q . \
			|| { echo "the synthesized stack does not package $$f/bootstrap"; exit 1; }; \
	done; echo "the synthesized stack packages both bootstraps"

## The CDK app: template tests, then cfn-lint and checkov on a synthesized
## template (placeholder function code: no Rust build needed).
infra-test: deps
	@mkdir -p $(CARGO_TARGET_DIR)
	cd infra && npm ci --no-audit --no-fund --loglevel=error
	set -o pipefail; cd infra && npm test 2>&1 | tee $(CARGO_TARGET_DIR)/infra-test-output.log
	cd infra && rm -rf cdk.out && npx cdk synth --no-notices --quiet -c lambdaCodeDir=test/fixtures/lambda -o cdk.out
	cd infra && ../$(VENV)/bin/cfn-lint
	cd infra && ../$(VENV)/bin/checkov --skip-download --quiet --compact --framework cloudformation -d cdk.out

## The whole pipeline on local stand-ins, ending in a verified point-in-time recovery.
demo: deps
	cargo build --workspace --bins --examples --locked --quiet
	$(CARGO_TARGET_DIR)/debug/examples/demo

## Benchmarks against pgBackRest, barman-cloud and cp, side by side in one
## run (release builds); not part of `make test`. Results: BENCHMARKS.md.
BENCH_SEGMENTS ?= 32
bench: deps
	scripts/install-bench-deps.sh
	cargo build --release --locked -p walvault -p walvault-tests --bins --examples
	@mkdir -p $(CARGO_TARGET_DIR)
	set -o pipefail; { \
		echo "# make bench, $$(date -u +%Y-%m-%dT%H:%MZ), $$(nproc) cores, $$(uname -m), $$(git rev-parse --short HEAD)"; \
		WALVAULT_BIN=$(CARGO_TARGET_DIR)/release/walvault $(CARGO_TARGET_DIR)/release/examples/archivers $(BENCH_SEGMENTS); \
		echo; $(CARGO_TARGET_DIR)/release/examples/compress_profile; \
		echo; $(CARGO_TARGET_DIR)/release/examples/retention_scale 100000; \
	} 2>&1 | tee $(CARGO_TARGET_DIR)/bench-output.txt

## System packages (PostgreSQL 15, zstd) and the project venv with moto.
deps: $(VENV)/.installed
	@scripts/install-system-deps.sh

$(VENV)/.installed: requirements-test.txt
	@scripts/install-system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-test.txt
	touch $@

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

## Unit tests only: no stand-ins, no PostgreSQL.
unit:
	cargo test --workspace --locked --lib --bins
