#!/usr/bin/env python3
"""make bench-hot-keys: does a key's history make its writes slower? An independent
producer (confluent-kafka, one idempotent producer, paced) sends N account_created
events on N distinct accounts, then N account_updated events on 4 hot accounts, twice
(the second time their history is twice as long). The Postgres latency of each phase
(stored at `received_at`, sent at the Kafka timestamp) is read from `events`.

Targets (issue 30): the hot phases' p99 within 2x the spread phase's, and the second
hot phase's p99 no higher than 2x the first's (cost does not grow with history).
Prints the table and writes reports/hot-keys-<time>.json.

usage: hot_keys.py [--rate 2000] [--events 20000] [--bin target/release/eventline]
"""
import argparse
import datetime
import json
import subprocess
import sys
import time
import uuid

sys.path.insert(0, __import__("os").path.dirname(__file__))
import run_bench  # noqa: E402
from run_bench import ROOT, WORK, Slice, log, psql  # noqa: E402

from confluent_kafka import Producer  # noqa: E402

HOT = [f"hot_{i}" for i in range(4)]


def paced(producer, topic, rate, records):
    start = time.time()
    for i, (key, event_type, payload) in enumerate(records):
        event = {"event_id": str(uuid.uuid4()), "event_type": event_type, "source": "crm",
                 "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(), "payload": payload}
        producer.produce(topic, key=key.encode(), value=json.dumps(event).encode())
        wait = start + (i + 1) / rate - time.time()
        if wait > 0:
            producer.poll(0)
            time.sleep(wait)
        elif i % 1000 == 0:
            producer.poll(0)
    producer.flush(60)


def measure(rate, n, binary=run_bench.BIN):
    """Runs the three phases against a fresh slice; returns the phases' latency and the
    targets as (name, ratio, limit, met)."""
    WORK.mkdir(parents=True, exist_ok=True)
    s = Slice("hotkeys")
    processor = subprocess.Popen([binary, "run"], env=s.env, stdout=open(WORK / f"{s.topic}.log", "w"), stderr=subprocess.STDOUT)
    try:
        s.wait_ready(processor)
        brokers = run_bench.LOCAL["kafka"]["brokers"]
        producer = Producer({"bootstrap.servers": brokers, "enable.idempotence": True, "linger.ms": 5})
        # The producer id before the clock starts.
        producer.produce(s.topic + ".dlq", b"warm-up")
        producer.flush(10)
        spread = [(f"acc_{i:07d}", "account_created", {"account_id": f"acc_{i:07d}", "industry": "software", "region": "EMEA"}) for i in range(n)]
        log(f"hot keys: {n} events on {n} accounts at {rate:.0f}/s")
        paced(producer, s.topic, rate, spread)
        paced(producer, s.topic, rate, [(h, "account_created", {"account_id": h, "industry": "software", "region": "EMEA"}) for h in HOT])
        for round_ in (1, 2):
            log(f"hot keys: {n} events on 4 accounts at {rate:.0f}/s (round {round_})")
            hot = [(HOT[i % 4], "account_updated", {"account_id": HOT[i % 4], "changes": {"employee_count": i + 1}}) for i in range(n)]
            paced(producer, s.topic, rate, hot)
        deadline = time.time() + 300
        while int(psql(s.db, "SELECT count(*) FROM events") or 0) < 3 * n + 4 and time.time() < deadline:
            time.sleep(1)
    finally:
        processor.terminate()
        processor.wait(60)
    rows = psql(s.db, f"""
        WITH l AS (SELECT payload->>'account_id' LIKE 'hot%' AS hot, event_type,
                     extract(epoch FROM received_at - kafka_timestamp) * 1000 AS ms,
                     row_number() OVER (PARTITION BY event_type ORDER BY received_at, "offset") AS rn
                   FROM events WHERE event_type IN ('account_created', 'account_updated'))
        SELECT CASE WHEN NOT hot THEN 'spread' WHEN rn <= {n} THEN 'hot1' ELSE 'hot2' END,
               count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY ms),
               percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), max(ms)
        FROM l WHERE NOT (hot AND event_type = 'account_created') GROUP BY 1 ORDER BY 1""")
    phases = {}
    for line in rows.splitlines():
        name, count, p50, p99, top = line.split("|")
        phases[name] = {"events": int(count), "p50_ms": float(p50), "p99_ms": float(p99), "max_ms": float(top)}
    spread, hot1, hot2 = phases["spread"], phases["hot1"], phases["hot2"]
    ratios = [
        ("hot keys p99 / spread keys p99 (round 1)", hot1["p99_ms"] / spread["p99_ms"], 2.0),
        ("hot keys p99 / spread keys p99 (round 2, twice the history)", hot2["p99_ms"] / spread["p99_ms"], 2.0),
        ("round 2 p99 / round 1 p99 (growth with history)", hot2["p99_ms"] / hot1["p99_ms"], 2.0),
    ]
    return {"rate": rate, "events_per_phase": n, "phases": phases,
            "targets": [{"target": t, "ratio": round(r, 2), "limit": lim, "met": r <= lim} for t, r, lim in ratios]}


def print_result(result):
    n, phases = result["events_per_phase"], result["phases"]
    print(f"\nhot keys: Postgres latency at {result['rate']:.0f}/s, {n} events per phase (ms)")
    print(f"  {'phase':<42}{'p50':>8}{'p99':>8}{'max':>8}")
    for name, label in [("spread", f"{n} accounts, one event each"), ("hot1", f"4 accounts, up to {n // 4} events each"), ("hot2", f"4 accounts, up to {n // 2} events each")]:
        p = phases[name]
        print(f"  {label:<42}{p['p50_ms']:>8.1f}{p['p99_ms']:>8.1f}{p['max_ms']:>8.1f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--bin", default=run_bench.BIN)
    args = parser.parse_args()
    result = measure(args.rate, args.events, args.bin)
    print_result(result)
    print()
    for t in result["targets"]:
        print(f"{t['target']:<62} {t['ratio']:5.2f} (limit {t['limit']}) {'met' if t['met'] else 'NOT met'}")
    report = ROOT / "reports" / f"hot-keys-{time.strftime('%Y%m%d-%H%M%S')}.json"
    report.parent.mkdir(exist_ok=True)
    report.write_text(json.dumps(result, indent=2))
    print(f"\nreport: {report.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
