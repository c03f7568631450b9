#!/usr/bin/env bash
# Checks that the stack script works from a checkout that the 'postgres' user cannot
# enter, as a clone under /root (mode 700) is: copies this checkout into a fresh
# `mktemp -d` folder (mode 700), brings its stack up twice (safe to run twice), checks that
# Postgres answers a query and Kafka lists topics, then brings it down and cleans it.
# Runs on ports of its own, so it does not disturb a stack that is already up.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
say() { printf '[private-clone] %s\n' "$*" >&2; }
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

TMP="$(mktemp -d)"
CLONE="$TMP/eventline"
export EVENTLINE_PG_PORT="$(free_port)"
# Kafka needs three ports in a row (broker, controller, SASL_SSL): take one whose two
# successors are free too.
until KP="$(free_port)" && python3 -c "import socket
for p in ($KP+1, $KP+2): socket.socket().bind(('127.0.0.1', p))" 2>/dev/null; do :; done
export EVENTLINE_KAFKA_PORT="$KP"
cleanup() {
  [ -x "$CLONE/scripts/stack.sh" ] && "$CLONE/scripts/stack.sh" clean >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT

say "copying the checkout into $CLONE (mode $(stat -c %a "$TMP")), ports pg=$EVENTLINE_PG_PORT kafka=$EVENTLINE_KAFKA_PORT"
# The tracked and new files of the working tree, as a clone would have them (on a clean
# clone, as in CI, that is exactly the commit), so a change is checked before it lands.
mkdir -p "$CLONE"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | xargs -0 tar --ignore-failed-read -cf - 2>/dev/null) | tar -xf - -C "$CLONE"
# Share the Kafka jars this checkout already fetched, if any, instead of copying them again.
[ -d "$ROOT/.cache" ] && cp -r "$ROOT/.cache" "$CLONE/.cache"

cd "$CLONE"
make --no-print-directory up
make --no-print-directory up   # the second run must find everything running
answer="$(scripts/stack.sh psql -d postgres -tAc 'SELECT 1')"
[ "$answer" = 1 ] || { say "FAIL: postgres answered '$answer'"; exit 1; }
scripts/stack.sh status
make --no-print-directory down
if scripts/stack.sh status >/dev/null 2>&1; then say "FAIL: the stack still runs after make down"; exit 1; fi
say "ok: make up (twice), a query, make down, from a mode-700 checkout"
