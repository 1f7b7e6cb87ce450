# The Makefile mirrors CI: `make test` is exactly what .ci/run checks.
CARGO ?= cargo

.PHONY: run build test fmt fmt-check lint proto-lint services kafka-broker test-rust smoke prometheus-kit python-example fuzz fuzz-smoke soak certs migrate bench bench-provisioning bench-rollout

## run: start tenantd with development certificates: in memory, or on DATABASE_URL when set
run:
	$(CARGO) run --bin tenantd

build:
	$(CARGO) build --workspace --all-targets

## test: formatting, clippy, buf lint, PostgreSQL and Redis up, every Rust test and the
## README smoke test (both against a tansu broker started for them unless KAFKA_BROKERS is
## set), the Prometheus kit, the Python client example, and each fuzz target for a few
## seconds
test: fmt-check lint proto-lint services test-rust smoke prometheus-kit python-example fuzz-smoke

fmt:
	$(CARGO) fmt --all
	cd fuzz && $(CARGO) fmt

fmt-check:
	$(CARGO) fmt --all -- --check
	cd fuzz && $(CARGO) fmt -- --check

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

proto-lint:
	@command -v buf >/dev/null || { echo "buf is missing: npm install -g @bufbuild/buf" >&2; exit 1; }
	buf lint

## services: make sure the test PostgreSQL and Redis answer (TEST_DATABASE_URL /
## TEST_REDIS_URL, else the local ones), and the consumer's Python packages are there
services:
	scripts/test-services.sh

## kafka-broker: install tansu 0.6.0 (once; about 20 minutes on 2 cores)
kafka-broker:
	scripts/kafka-broker.sh install

# The process tests run the tenantd and tenantctl binaries, so they are built first.
test-rust:
	$(CARGO) build --bin tenantd --bin tenantctl
	scripts/kafka-broker.sh run -- $(CARGO) test --workspace --all-targets

smoke:
	$(CARGO) build --bin tenantd --bin tenantctl
	scripts/kafka-broker.sh run -- scripts/smoke.sh

## prometheus-kit: deploy/prometheus/'s scrape config and alerting rules checked, the
## rules' unit tests, and a real Prometheus scraping a real tenantd with them
prometheus-kit:
	@command -v promtool >/dev/null || { echo "promtool is missing: apt-get install prometheus" >&2; exit 1; }
	promtool check config deploy/prometheus/prometheus.yml
	promtool test rules deploy/prometheus/tenantd.rules.test.yml
	$(CARGO) build --bin tenantd
	scripts/prometheus-scrape.sh

## python-example: the Python client (examples/python, stubs generated from proto/) against
## a real tenantd
python-example: services
	$(CARGO) build --bin tenantd
	scripts/python-example.sh

## fuzz: every cargo-fuzz target for FUZZ_SECONDS (300) each (nightly; cargo-fuzz)
FUZZ_SECONDS ?= 300
fuzz:
	scripts/fuzz.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

## fuzz-smoke: every fuzz target for 5 seconds, so none rots (part of `make test`; an
## unoptimized build, half the build time)
fuzz-smoke:
	FUZZ_BUILD=dev scripts/fuzz.sh 5

## soak: tenantd on PostgreSQL and Redis (release build) under a steady load for
## SOAK_SECONDS (600), failing on any failed call or on resident memory past its bounds.
## SOAK_ARGS="--max-rss-mib 512 --max-rss-growth-mib 64 --phase-seconds 20"
SOAK_SECONDS ?= 600
soak: services
	$(CARGO) build --release -q -p tenantd-server --bin tenantd -p tenantd-e2e --bin tenantd-bench
	BENCH_REDIS=$(BENCH_REDIS) $(or $(CARGO_TARGET_DIR),target)/release/tenantd-bench soak --seconds $(SOAK_SECONDS) $(SOAK_ARGS)

## bench: tenantd's hot RPCs (GetTenant, VerifyApiKey, CreateTenant) in memory, on
## PostgreSQL and with the Redis cache, each against its floor measured in the same run
## (a bare tonic mTLS echo, pgbench, redis-benchmark); release build, a separate load
## process. BENCH_PIN=1 pins servers to core 0 and clients to core 1; BENCH_ENFORCE=1 fails
## on a missed target; BENCH_ARGS="--duration 10 --connections 4 --in-flight 16".
BENCH_REDIS ?= $(or $(TEST_REDIS_URL),$(REDIS_URL),redis://127.0.0.1:6379)
bench: services
	$(CARGO) build --release -q -p tenantd-server --bin tenantd -p tenantd-e2e --bin tenantd-bench
	BENCH_REDIS=$(BENCH_REDIS) $(or $(CARGO_TARGET_DIR),target)/release/tenantd-bench $(BENCH_ARGS)

## bench-provisioning: provision N tenants on PostgreSQL (release build) and print
## tenants/s, per-step p50/p99 and the same schema DDL through psql.
## BENCH_ARGS="--tenants 1000 --workers 8 --concurrency 32"
bench-provisioning: services
	$(CARGO) run --release -q -p tenantd-e2e --bin tenantd-bench-provisioning -- $(BENCH_ARGS)

## bench-rollout: a tenant-schema rollout of one migration (a column with a default, an
## index, a backfill) to N schemas on PostgreSQL (release build), against the same DDL
## applied serially through psql; fails past 1.2x psql or a no-op rollout of 2 s.
## BENCH_ARGS="--tenants 1000 --max-parallel 4"
bench-rollout: services
	$(CARGO) run --release -q -p tenantd-e2e --bin tenantd-bench-rollout -- $(BENCH_ARGS)

## migrate: apply the migrations to DATABASE_URL
migrate:
	$(CARGO) run --bin tenantd -- migrate

## certs: (re)generate the development certificates in .tenantd/dev-certs
certs:
	$(CARGO) run --bin tenantd -- certs generate --force
