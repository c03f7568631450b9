#!/usr/bin/env bash
# make demo: runs the processor on sample traffic and shows what landed where.
# It starts from a clean slate of its own: topic crm.events.demo (3 partitions) and its
# DLQ, database eventline_demo, and the lake/ folder.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="$ROOT/target/release/eventline"
STACK="$ROOT/scripts/stack.sh"
TOPIC=crm.events.demo
DB=eventline_demo
LOG="$ROOT/.dev/demo-processor.log"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
sql() { "$STACK" psql -d "$DB" -v ON_ERROR_STOP=1 -P pager=off "$@"; }

PG_URL_BASE=$(python3 -c 'import tomllib;print(tomllib.load(open("settings/local.toml","rb"))["postgres"]["url"].rsplit("/",1)[0])')
export EVENTLINE_ENV=local
export EVENTLINE__KAFKA__TOPIC=$TOPIC
export EVENTLINE__KAFKA__DLQ_TOPIC=$TOPIC.dlq
export EVENTLINE__KAFKA__GROUP_ID=eventline-demo
export EVENTLINE__POSTGRES__URL="$PG_URL_BASE/$DB"
export EVENTLINE__LAKE__ROOT="$ROOT/lake"
export EVENTLINE__LAKE__MAX_FILE_AGE_MS=1000
export EVENTLINE__SUPERVISION__LOG_PATH="$ROOT/.dev/demo-supervision.jsonl"
export EVENTLINE__PIPELINE__SUMMARY_INTERVAL_S=2

say "Clean slate: topic $TOPIC, database $DB, lake/"
"$STACK" topic "$TOPIC" 3 recreate
"$STACK" topic "$TOPIC.dlq" 1 recreate
PGOPTIONS="-c client_min_messages=warning" "$STACK" psql -d postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -qc "CREATE DATABASE $DB" >/dev/null
find lake -mindepth 1 -not -name .gitkeep -delete 2>/dev/null || true
rm -f "$EVENTLINE__SUPERVISION__LOG_PATH"

say "Starting the processor (log: ${LOG#$ROOT/})"
"$BIN" run >"$LOG" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT

# Runs `eventline produce ARGS` and shows its summary lines. Everything it prints also goes
# to $PRODUCE_LOG: on a broker started seconds ago librdkafka warns ("Coordinator load in
# progress: retrying") before it succeeds, and those lines belong in a log, not on screen.
# grep reads to the end, so the producer never writes into a closed pipe, and under
# pipefail its exit code still decides.
PRODUCE_LOG="$ROOT/.dev/demo-producer.log"
: > "$PRODUCE_LOG"
produce() { "$BIN" produce "$@" 2>&1 | tee -a "$PRODUCE_LOG" | grep -E '^(sent |generated: )'; }

# Polls `check` every 0.2 s until it succeeds or `seconds` pass; the processor must stay up.
wait_for() { # seconds, description, check...
  local deadline=$((SECONDS + $1)) what="$2"; shift 2
  until "$@"; do
    kill -0 $PID 2>/dev/null || { echo "processor exited; see $LOG"; tail -20 "$LOG"; exit 1; }
    [ $SECONDS -lt $deadline ] || { echo "timed out after $((SECONDS - deadline + $1))s waiting for $what; see $LOG"; exit 1; }
    sleep 0.2
  done
}

say "Producing sample traffic"
started=$(date +%s.%N)
echo "-- 300 valid events from fixtures/crm-sample.jsonl"
produce --file fixtures/crm-sample.jsonl
echo "-- the first 30 of them again (a retrying upstream): duplicates"
head -30 fixtures/crm-sample.jsonl | produce --file -
echo "-- 6 broken events sent raw on purpose (the producer would reject them): dead letters"
produce --file fixtures/crm-invalid.jsonl --raw
echo "-- 50,000 generated records: duplicates, conflicts, invalid records, tombstones, late events,"
echo "   invalidations (is_valid: false) and deletions (tombstones keyed by an event_id)"
produce --generate 50000 --seed 7 --duplicate-ratio 0.05 --conflict-ratio 0.02 --invalid-ratio 0.03 --tombstone-ratio 0.01 --late-ratio 0.02 --max-lateness 2h \
  --invalidate-ratio 0.01 --delete-ratio 0.005 --start-time "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "-- 10,000 generated order events (seed 003's domain: created, paid, shipped, cancelled),"
echo "   with duplicates and late events"
produce --generate 10000 --seed 11 --types order_created,order_paid,order_shipped,order_cancelled \
  --duplicate-ratio 0.02 --late-ratio 0.05 --max-lateness 1h --start-time "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
total=$((300 + 30 + 6 + 50000 + 10000))

say "Waiting until all $total records are accounted for"
all_accounted() { done_count=$(sql -tAc "SELECT coalesce(sum(count),0) FROM outcome_counts" 2>/dev/null || echo 0); [ "$done_count" = "$total" ]; }
wait_for 300 "all $total records to get an outcome" all_accounted
accepted=$(sql -tAc "SELECT count(*) FROM events")
# The lake as the README reads it: every event, less the deleted ones.
LAKE_NOT_DELETED="SELECT count(*) FROM read_parquet('lake/event_type=*/*/*/*/*.parquet') WHERE event_id NOT IN (SELECT event_id FROM read_parquet('lake/_retractions/*.retractions') WHERE action = 'deleted')"
lake_complete() {
  in_lake=$(python3 -c "import duckdb,glob;print(duckdb.sql(\"$LAKE_NOT_DELETED\").fetchone()[0] if glob.glob('lake/event_type=*/*/*/*/*.parquet') else 0)")
  [ "$in_lake" = "$accepted" ]
}
wait_for 120 "the lake to hold all $accepted accepted events" lake_complete
elapsed=$(python3 -c "import time;print(f'{time.time()-$started:.2f}')")

say "Stopping the processor with SIGTERM (flush, commit, exit 0)"
kill -TERM $PID
wait $PID && echo "exit code 0" || { echo "processor exited with $?"; exit 1; }
trap - EXIT

say "Outcomes (accepted + duplicate + conflict + invalidated + deleted + dead_letter = $total records)"
sql -c "SELECT outcome, sum(count) AS records FROM outcome_counts GROUP BY outcome ORDER BY outcome"
say "Late events: stored and marked (later than pipeline.late_after_s after their own time)"
sql -c "SELECT count(*) FILTER (WHERE late) AS late, count(*) AS accepted, max(lateness_ms) / 1000 AS latest_s FROM events"
say "Corrections and deletes: invalidated events stay, marked; deleted events are gone"
sql -c "SELECT count(*) AS stored, count(*) FILTER (WHERE NOT is_valid) AS invalidated,
               (SELECT count(*) FROM valid_events) AS valid,
               (SELECT count(*) FROM processed_events WHERE deleted_at IS NOT NULL) AS deleted
        FROM events"
say "Rows per table in PostgreSQL ($DB)"
sql -c "SELECT 'events' AS table, count(*) FROM events UNION ALL SELECT 'processed_events', count(*) FROM processed_events
        UNION ALL SELECT 'dead_letters', count(*) FROM dead_letters UNION ALL SELECT 'conflicts', count(*) FROM conflicts"
say "Dead letters by reason"
sql -c "SELECT error_class, count(*), min(left(error_message, 70)) AS example FROM dead_letters GROUP BY error_class ORDER BY 2 DESC"
say "Lake files per Hive partition (lake/)"
find lake -path 'lake/event_type=*' -name '*.parquet' | sed 's|/[^/]*$||' | sort | uniq -c | sed 's|^ *\([0-9]*\) lake/|\1 file(s)  |'
say "DuckDB over the lake: read_parquet('lake/event_type=*/*/*/*/*.parquet', hive_partitioning=true, union_by_name=true)"
python3 - <<'PY'
import duckdb
print(duckdb.sql("""
    SELECT event_type, year, month, day, count(*) AS events, count(DISTINCT event_id) AS distinct_ids
    FROM read_parquet('lake/event_type=*/*/*/*/*.parquet', hive_partitioning=true, union_by_name=true)
    GROUP BY ALL ORDER BY event_type, year, month, day
"""))
PY
say "DuckDB over the lake, honouring invalidations and deletions (lake/_retractions/, see the README)"
python3 - <<'PY'
import duckdb
print(duckdb.sql("""
    WITH retractions AS (SELECT event_id, action FROM read_parquet('lake/_retractions/*.retractions'))
    SELECT event_type, count(*) AS valid_events
    FROM read_parquet('lake/event_type=*/*/*/*/*.parquet', hive_partitioning=true, union_by_name=true)
    WHERE event_id NOT IN (SELECT event_id FROM retractions)
    GROUP BY ALL ORDER BY event_type
"""))
print(duckdb.sql("SELECT action, count(*) AS events FROM read_parquet('lake/_retractions/*.retractions') GROUP BY ALL ORDER BY action"))
PY
say "The lake as a Delta table: Python deltalake, and DuckDB's delta extension (delta_scan)"
TOPIC="$TOPIC" python3 - <<'PY'
import os, duckdb
from deltalake import DeltaTable
from duckdb_extensions import import_extension
events, retractions = DeltaTable("lake"), DeltaTable("lake/_retractions")
topic = os.environ["TOPIC"]
txn = {p: events.transaction_version(f"eventline/{topic}/{p}") for p in range(6)}
print(f"events table version {events.version()}, {events.count()} rows in {len(events.file_uris())} files; "
      f"retractions table version {retractions.version()}")
print("txn per partition (next offset the table does not hold):",
      ", ".join(f"{p}: {v}" for p, v in txn.items() if v is not None))
import_extension("delta")
duckdb.sql("LOAD delta")
print(duckdb.sql("""
    SELECT e.event_type, count(*) AS valid_events
    FROM delta_scan('lake') AS e
    WHERE e.event_id NOT IN (SELECT event_id FROM delta_scan('lake/_retractions'))
    GROUP BY ALL ORDER BY e.event_type
"""))
print("dead letters in the lake (lake/_dead_letters, the DLQ as a Delta table):")
print(duckdb.sql("""
    SELECT error_class, count(*) AS records FROM delta_scan('lake/_dead_letters')
    GROUP BY ALL ORDER BY records DESC
"""))
PY
say "Current state (one table per entity, folded from the events in the same transaction)"
sql -c "SELECT 'account_states' AS table, count(*) FROM account_states UNION ALL SELECT 'contact_states', count(*) FROM contact_states
        UNION ALL SELECT 'opportunity_states', count(*) FROM opportunity_states UNION ALL SELECT 'order_states', count(*) FROM order_states"
echo "-- orders by status (order_states.status: the status of each order's latest event)"
sql -c "SELECT status, count(*) AS orders, sum(amount) AS amount, sum(amount_paid) AS paid FROM order_states GROUP BY status ORDER BY orders DESC"
echo "-- accounts by sales area (region as normalised by account_created's transforms: US -> AMER)"
sql -c "SELECT region, count(*) AS accounts, round(avg(employee_count)) AS avg_employees FROM account_states GROUP BY region ORDER BY accounts DESC"
order=$(sql -tAc "SELECT order_id FROM order_states WHERE event_count >= 3 ORDER BY order_id LIMIT 1")
echo "-- eventline state order $order"
"$BIN" state order "$order"
say "Typed columns in the lake: DuckDB queries with no JSON functions"
python3 - <<'PY'
import duckdb
from duckdb_extensions import import_extension
import_extension("delta")
duckdb.sql("LOAD delta")
print("accounts created per region per day (delta_scan('lake')):")
print(duckdb.sql("""
    SELECT region, make_date(year, month, day) AS day, count(*) AS accounts
    FROM delta_scan('lake') WHERE event_type = 'account_created'
    GROUP BY ALL ORDER BY day, accounts DESC LIMIT 8
"""))
print("payments per currency and method (order_paid's amount_paid is a decimal column):")
print(duckdb.sql("""
    SELECT currency, method, count(*) AS payments, sum(amount_paid) AS paid
    FROM read_parquet('lake/event_type=order_paid/*/*/*/*.parquet', hive_partitioning = true)
    GROUP BY ALL ORDER BY paid DESC LIMIT 6
"""))
PY
say "Erasing deleted events from the lake files (eventline lake purge)"
"$BIN" lake purge | head -1
say "Merging small lake files (eventline lake compact)"
"$BIN" lake compact | head -2
say "Supervision log (eventline supervision)"
"$BIN" supervision
say "Result"
echo "$total records -> $accepted events in Postgres and $in_lake in the lake (deleted ones left out), drained in ${elapsed}s ($(python3 -c "print(f'{$total/$elapsed:.0f}')") records/s end to end, including producer start-up)"
