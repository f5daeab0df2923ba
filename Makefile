# walvault: the two commands a newcomer needs are `make test` and `make demo`.

SHELL := /bin/bash
VENV := .venv
PYTHON ?= python3
export CARGO_TARGET_DIR ?= $(CURDIR)/target

.PHONY: test demo deps lint unit infra-test

## Installs what is missing, then runs every check and every test.
test: deps lint infra-test
	@mkdir -p $(CARGO_TARGET_DIR)
	cargo build --workspace --bins --locked
	set -o pipefail; cargo test --workspace --locked 2>&1 | tee $(CARGO_TARGET_DIR)/test-output.log
	@awk '/^test result:/ {passed += $$4; failed += $$6} /^# pass / {passed += $$3} /^# fail / {failed += $$3} END {printf "%d passed, %d failed\n", passed, failed}' $(CARGO_TARGET_DIR)/test-output.log $(CARGO_TARGET_DIR)/infra-test-output.log

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
	cargo build --workspace --bins --locked --quiet
	cargo run --locked --quiet -p walvault-tests --example demo

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
