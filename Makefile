# eventline: the two commands of the Quick start are `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: up down status logs clean build demo test deps drill bench bench-hot-keys bench-produce soak fuzz

## Local stack (Kafka + PostgreSQL, no Docker)
up:
	scripts/stack.sh up
down:
	scripts/stack.sh down
status:
	scripts/stack.sh status
logs:
	scripts/stack.sh logs
clean:
	scripts/stack.sh clean
	rm -rf lake/event_type=* lake/_eventline lake/_delta_log lake/_retractions lake/_dead_letters reports

## Toolchain and build dependencies (apt-get, pip); safe to run twice
deps:
	scripts/deps.sh

build: deps
	$(CARGO) build --release --bin eventline

## Bring everything up, run the processor on sample traffic, show what landed where
demo: deps up build
	scripts/demo.sh

## The whole test suite, against the real broker, Postgres and an S3 server (moto)
test: deps
	scripts/stack.sh up-s3
	$(CARGO) build --release --bin eventline
	EVENTLINE_BIN=$(CURDIR)/target/release/eventline $(CARGO) test --release -- --test-threads=4

## Generated hostile traffic through the real broker, Postgres and lake for FUZZ_SECONDS
## (default 600; make test runs 40); a failing round prints its seed and is kept in
## tests/fuzz_corpus/, replayed first every time. FUZZ_SEED=N replays one seed.
fuzz: deps
	scripts/stack.sh up-s3
	$(CARGO) build --release --bin eventline
	EVENTLINE_FUZZ_SECONDS=$${FUZZ_SECONDS:-600} EVENTLINE_FUZZ_SEED=$${FUZZ_SEED:-} EVENTLINE_BIN=$(CURDIR)/target/release/eventline \
	  $(CARGO) test --release --test fuzz -- --nocapture

## Every replay and fault drill against the local stack (reports in reports/)
drill: deps up build
	@set -e; for d in "kill" "sink-crash --sink parquet" "sink-crash --sink postgres" "db-outage" "resend" "replay --rebuild-lake" "verify"; do \
	  echo "== eventline drill $$d"; target/release/eventline drill $$d; done

## Throughput and latency against this machine's limits, a Python baseline and Kafka Connect (reports/bench-*.json, *.svg)
bench: deps up build
	python3 bench/run_bench.py $(BENCH_ARGS)

## Hot keys: 4 accounts with tens of thousands of events each against spread ones, same rate (reports/hot-keys-*.json)
bench-hot-keys: deps up build
	python3 bench/hot_keys.py $(HOT_KEYS_ARGS)

## 10 minutes at 1,000/s with every feature on and a lake writer restart: RSS and CPU over time (reports/soak-*.json, *.svg)
soak: deps up build
	python3 bench/soak.py $(SOAK_ARGS)

## The generator's publishing rate against Kafka's own producer benchmark, same run
bench-produce: deps up build
	scripts/bench-produce.sh
