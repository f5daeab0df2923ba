# walvault: a newcomer needs `make demo` and `make test`; contributors loop
# on `make check`.

SHELL := /bin/bash
VENV := .venv
PYTHON ?= python3
export CARGO_TARGET_DIR ?= $(CURDIR)/target

# `cargo lambda` is the venv's cargo-lambda (from PyPI).
CARGO_LAMBDA := PATH="$(CURDIR)/$(VENV)/bin:$$PATH" cargo lambda
# `make lambda-build` builds deployable functions (release); `make test`
# checks the same cross-build with a lighter profile (see Cargo.toml).
LAMBDA_PROFILE ?= release
# Function code the infra checks synthesize with: placeholders unless real
# bootstraps are passed (as `make test` does after building them).
LAMBDA_CODE_DIR ?= $(CURDIR)/infra/test/fixtures/lambda

.PHONY: test check demo soak bench deps system-deps lint rust-build rust-test iam-template unit lambda-local lambda-build infra-test contract summary

## Installs what is missing, then runs every check and every test.
test: deps lint rust-build rust-test lambda-local
	$(MAKE) --no-print-directory lambda-build LAMBDA_PROFILE=lambda-check
	$(MAKE) --no-print-directory infra-test LAMBDA_CODE_DIR=$(CARGO_TARGET_DIR)/lambda
	@$(MAKE) --no-print-directory summary

## The contributors' loop: formatting, lints, and every test that needs no
## stand-in (the logic on in-memory fakes, the planner's property test, the
## contract with the infra). A few minutes after the first build.
check: lint
	cargo test --workspace --locked --exclude walvault-tests

## One build of everything `cargo test` and the local invocation run.
rust-build:
	@mkdir -p $(CARGO_TARGET_DIR)
	cargo build --workspace --bins --examples --tests --locked

rust-test: rust-build iam-template
	set -o pipefail; cargo test --workspace --locked 2>&1 | tee $(CARGO_TARGET_DIR)/test-output.log

## The CDK app's template for the test stand's AWS profile, which checks
## every request to staging and the catalog against its IAM statements.
iam-template: deps
	@mkdir -p $(CARGO_TARGET_DIR)
	cd infra && npx tsc && node dist/bin/iam-template.js $(CARGO_TARGET_DIR)/walvault-iam-template.json

## `cargo lambda watch` + `cargo lambda invoke` with events/ against the
## stand-ins. Outside `cargo test`: a nested cargo would wait on its build
## lock. Runs the example the workspace build made (`cargo run -p` would
## unify features anew and rebuild the SDK crates).
lambda-local: deps rust-build iam-template
	set -o pipefail; $(CARGO_TARGET_DIR)/debug/examples/lambda_local 2>&1 | tee $(CARGO_TARGET_DIR)/lambda-local-output.log

## The functions as Lambda runs them: arm64 `bootstrap` files for
## provided.al2023 in $(CARGO_TARGET_DIR)/lambda/.
lambda-build: deps
	$(CARGO_LAMBDA) build --profile $(LAMBDA_PROFILE) --arm64 --locked -p compress -p retention
	@for f in compress retention; do \
		file "$(CARGO_TARGET_DIR)/lambda/$$f/bootstrap" | grep -q 'ARM aarch64' || { echo "$$f/bootstrap is not an arm64 executable"; exit 1; }; \
		echo "$$f/bootstrap: $$(stat -c %s "$(CARGO_TARGET_DIR)/lambda/$$f/bootstrap") bytes ($(LAMBDA_PROFILE))"; \
	done

## The CDK app: compile, template tests, one synth (with the function code
## in LAMBDA_CODE_DIR; placeholders by default), then cfn-lint and checkov.
infra-test: deps
	@mkdir -p $(CARGO_TARGET_DIR)
	set -o pipefail; cd infra && npm test 2>&1 | tee $(CARGO_TARGET_DIR)/infra-test-output.log
	cd infra && rm -rf cdk.out && npx cdk synth --no-notices --quiet -c lambdaCodeDir=$(LAMBDA_CODE_DIR) -o cdk.out
	@for f in compress retention; do \
		find infra/cdk.out -name bootstrap -exec cmp -s {} "$(LAMBDA_CODE_DIR)/$$f/bootstrap" \; -print | grep -q . \
			|| { echo "the synthesized stack does not package $$f/bootstrap"; exit 1; }; \
	done; echo "the synthesized stack packages both functions from $(LAMBDA_CODE_DIR)"
	cd infra && ../$(VENV)/bin/cfn-lint
	cd infra && ../$(VENV)/bin/checkov --skip-download --quiet --compact --framework cloudformation -d cdk.out

## Regenerates infra/contract.json from the Rust code.
contract:
	WALVAULT_UPDATE_CONTRACT=1 cargo test --locked -p shared --lib contract

## The final line: every test that ran, Rust, node and local invocation.
summary:
	@awk '/^test result:/ {passed += $$4; failed += $$6} /^# pass / {passed += $$3} /^# fail / {failed += $$3} END {printf "%d passed, %d failed\n", passed, failed}' $(CARGO_TARGET_DIR)/test-output.log $(CARGO_TARGET_DIR)/infra-test-output.log $(CARGO_TARGET_DIR)/lambda-local-output.log

## The whole pipeline on local stand-ins, ending in a verified point-in-time recovery.
demo: deps iam-template
	cargo build --workspace --bins --examples --locked --quiet
	$(CARGO_TARGET_DIR)/debug/examples/demo

## The chaos run for SOAK_MINUTES (not part of `make test`, which runs one
## round): figures on stderr and in $(CARGO_TARGET_DIR)/soak-report.txt.
SOAK_MINUTES ?= 30
soak: deps iam-template
	cargo build --workspace --bins --examples --locked --quiet
	@mkdir -p $(CARGO_TARGET_DIR)
	set -o pipefail; $(CARGO_TARGET_DIR)/debug/examples/soak $(SOAK_MINUTES) \
		2>&1 >$(CARGO_TARGET_DIR)/soak-emf.log | tee $(CARGO_TARGET_DIR)/soak-report.txt

## Benchmarks against pgBackRest, barman-cloud and cp, side by side in one
## run (release builds); not part of `make test`. Results: BENCHMARKS.md.
BENCH_SEGMENTS ?= 32
BENCH_SCALE ?= 100
bench: deps iam-template
	scripts/install-bench-deps.sh
	cargo build --release --locked -p walvault -p walvault-tests --bins --examples
	@mkdir -p $(CARGO_TARGET_DIR)
	set -o pipefail; { \
		echo "# make bench, $$(date -u +%Y-%m-%dT%H:%MZ), $$(nproc) cores, $$(uname -m), $$(git rev-parse --short HEAD)"; \
		WALVAULT_BIN=$(CARGO_TARGET_DIR)/release/walvault $(CARGO_TARGET_DIR)/release/examples/archivers $(BENCH_SEGMENTS); \
		echo; $(CARGO_TARGET_DIR)/release/examples/compress_profile; \
		echo; $(CARGO_TARGET_DIR)/release/examples/compress_memory; \
		echo; $(CARGO_TARGET_DIR)/release/examples/retention_scale 100000; \
		echo; $(CARGO_TARGET_DIR)/release/examples/verify_scale 100000 64; \
		echo; WALVAULT_BIN=$(CARGO_TARGET_DIR)/release/walvault $(CARGO_TARGET_DIR)/release/examples/backups $(BENCH_SCALE); \
	} 2>&1 | tee $(CARGO_TARGET_DIR)/bench-output.txt

## System packages (PostgreSQL 15, zstd, file), the project venv (moto,
## cfn-lint, checkov, cargo-lambda) and the CDK app's npm packages.
deps: system-deps $(VENV)/.installed infra/node_modules/.package-lock.json

system-deps:
	@scripts/install-system-deps.sh

$(VENV)/.installed: requirements-test.txt | system-deps
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-test.txt
	touch $@

infra/node_modules/.package-lock.json: infra/package-lock.json
	cd infra && npm ci --no-audit --no-fund --loglevel=error

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

## Unit tests only: no stand-ins, no PostgreSQL.
unit:
	cargo test --workspace --locked --lib --bins
