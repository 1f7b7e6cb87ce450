# The Makefile mirrors CI: `make test` is exactly what .ci/run checks.
CARGO ?= cargo

.PHONY: run build test fmt fmt-check lint proto-lint test-rust smoke certs

## run: start tenantd on the embedded (in-memory) default with development certificates
run:
	$(CARGO) run --bin tenantd

build:
	$(CARGO) build --workspace --all-targets

## test: formatting, clippy, buf lint, every Rust test, then the README smoke test
test: fmt-check lint proto-lint test-rust smoke

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

proto-lint:
	@command -v buf >/dev/null || { echo "buf is missing: npm install -g @bufbuild/buf" >&2; exit 1; }
	buf lint

test-rust:
	$(CARGO) test --workspace --all-targets

smoke:
	$(CARGO) build --bin tenantd
	scripts/smoke.sh

## certs: (re)generate the development certificates in .tenantd/dev-certs
certs:
	$(CARGO) run --bin tenantd -- certs generate --force
