#!/usr/bin/env bash
# Installs what building and testing eventline needs on a fresh Debian machine.
# Safe to run twice: every step checks first.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

need_apt=()
command -v cc >/dev/null || need_apt+=(build-essential)
command -v make >/dev/null || need_apt+=(make)
command -v perl >/dev/null || need_apt+=(perl)
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
[ -f /usr/include/postgresql/libpq-fe.h ] || need_apt+=(libpq-dev)
[ -f /usr/include/zlib.h ] || need_apt+=(zlib1g-dev)
# librdkafka's TLS and SASL/SCRAM (secured clusters) link the system OpenSSL.
[ -f /usr/include/openssl/ssl.h ] || need_apt+=(libssl-dev)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
# kcat: a third-party Kafka client the hostile-input tests send raw records with
# (header names that are not UTF-8, keys of any bytes).
command -v kcat >/dev/null || need_apt+=(kcat)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "[deps] apt-get install ${need_apt[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "[deps] cargo is missing: install Rust with rustup (https://rustup.rs)" >&2
  exit 1
fi

# DuckDB reads the lake in the tests and the demo (a reader nobody here wrote);
# PyYAML parses the Prometheus alert rules in a test; deltalake and the delta extension
# read the lake as a Delta table.
# confluent-kafka sends the hostile-input tests' transactions (committed and aborted).
if ! python3 -c 'import duckdb, yaml, deltalake, duckdb_extensions, duckdb_extension_delta, moto, boto3, confluent_kafka; assert duckdb.__version__ == "1.5.5"' 2>/dev/null; then
  echo "[deps] pip install -r $ROOT/scripts/requirements.txt" >&2
  python3 -m pip install -q -r "$ROOT/scripts/requirements.txt" \
    || python3 -m pip install -q --break-system-packages -r "$ROOT/scripts/requirements.txt"
fi
