# syntax=docker/dockerfile:1
#
# The eventline processor as a small runtime image (see README, "Running in a container").
#
#   docker build -t eventline .
#   docker compose --profile eventline up -d --build  # with Kafka and Postgres, see docker-compose.yml
#
# Our own machines have no Docker engine: this file is not exercised by the tests here.

# --- build ---------------------------------------------------------------------------
# rust:1-bookworm is the same Debian release as the runtime stage, so the binary links
# the same libpq and OpenSSL it will find there.
FROM rust:1-bookworm AS builder

# What the build needs (as scripts/deps.sh): librdkafka is compiled from source by
# rdkafka-sys (its own configure script and make, no cmake) with OpenSSL for TLS and
# SASL/SCRAM and with zlib; diesel links libpq; zstd and mimalloc are compiled by cc.
# Debian's versions are not pinned (DL3008): bookworm's security updates replace them.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential pkg-config libssl-dev libpq-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# Only what the binary is built from: the migrations are embedded at compile time.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations

# The crates and the target folder live in BuildKit caches: a change to src/ rebuilds
# eventline only, not librdkafka and the 300 crates under it. The cache is not part of
# the image, so the binary is copied out of it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin eventline \
 && install -m 0755 target/release/eventline /usr/local/bin/eventline

# --- run -----------------------------------------------------------------------------
FROM debian:bookworm-slim

# Runtime libraries only: libpq (diesel), OpenSSL (librdkafka's TLS and SASL), zlib, and
# the CA bundle for verifying brokers and Postgres servers with public certificates.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates libpq5 libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/*

# A fixed non-root uid, so that bind-mounted folders can be given to it (chown 10001).
# The state folder is created here, owned by that user: a new named volume mounted on
# it takes this ownership.
RUN groupadd --gid 10001 eventline \
 && useradd --uid 10001 --gid 10001 --home-dir /var/lib/eventline \
      --no-create-home --shell /usr/sbin/nologin eventline \
 && mkdir -p /var/lib/eventline/lake /var/lib/eventline/logs \
 && chown -R 10001:10001 /var/lib/eventline

COPY --from=builder /usr/local/bin/eventline /usr/local/bin/eventline
# Baked in, read-only for the process; mount a folder over either to replace it.
COPY settings/ /etc/eventline/settings/
COPY contracts/ /etc/eventline/contracts/

# Settings: /etc/eventline/settings/default.toml, then {EVENTLINE_ENV}.toml from the same
# folder if there is one (none is baked in for "production": mount one), then the
# EVENTLINE__SECTION__KEY variables, which win over both files. The four settings below
# are variables because their defaults are relative paths for a checkout and a loopback
# listener; change them here or in `docker run -e` / compose `environment:`, not in a
# mounted file. The admin server must listen on all interfaces to be reachable from
# outside the container (publish it on 127.0.0.1 of the host), so it requires a bearer
# token for /metrics and /supervision, read from a mounted secret (compose: the
# `eventline-admin-token` secret); without that file the container stops at start,
# naming admin.token_file. /health and /ready (the HEALTHCHECK) stay open.
ENV EVENTLINE_SETTINGS_DIR=/etc/eventline/settings \
    EVENTLINE_ENV=production \
    EVENTLINE__PIPELINE__CONTRACTS_DIR=/etc/eventline/contracts \
    EVENTLINE__LAKE__ROOT=/var/lib/eventline/lake \
    EVENTLINE__SUPERVISION__LOG_PATH=/var/lib/eventline/logs/supervision.jsonl \
    EVENTLINE__ADMIN__LISTEN=0.0.0.0:9898 \
    EVENTLINE__ADMIN__TOKEN_FILE=/run/secrets/eventline-admin-token \
    RUST_LOG=info

# The lake and the supervision log with its rotated files (the process's only state
# outside Postgres and Kafka).
WORKDIR /var/lib/eventline
VOLUME ["/var/lib/eventline"]
USER 10001:10001

# admin.listen: /health, /ready, /metrics, /supervision.
EXPOSE 9898

# No curl or wget in the slim image: bash's /dev/tcp asks /health itself (200 healthy,
# 503 not), on the port of EVENTLINE__ADMIN__LISTEN. Start-up (broker probe, migrations)
# may take up to kafka.connect_timeout_s (30 s) before the admin server answers.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${EVENTLINE__ADMIN__LISTEN##*:} && printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]

# SIGTERM (docker stop) flushes both sinks and commits within pipeline.shutdown_timeout_s
# (30 s): give the container longer than that (compose: stop_grace_period).
ENTRYPOINT ["eventline"]
CMD ["run"]
