#!/usr/bin/env python3
"""make bench: eventline's end-to-end throughput and latency against this machine's
single-stage limits, a typical Python baseline and a real peer (Kafka Connect with
Debezium's JDBC sink, bench/kafka_connect.py), all measured in the same run.

Prints a table, writes reports/bench-<time>.json and an SVG chart beside it. Ratios,
not absolute figures, are what to compare across runs: these machines are noisy.
"""
import argparse
import json
import os
import pathlib
import signal
import socket
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.request
import uuid

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = str(ROOT / "target/release/eventline")
STACK = str(ROOT / "scripts/stack.sh")
LOCAL = tomllib.load(open(ROOT / "settings/local.toml", "rb"))
DEFAULTS = tomllib.load(open(ROOT / "settings/default.toml", "rb"))
BROKERS = LOCAL["kafka"]["brokers"]
PG_BASE = LOCAL["postgres"]["url"].rsplit("/", 1)[0]
WORK = ROOT / ".dev/bench"


def run(args, env=None, capture=True):
    return subprocess.run(args, env=env, check=True, capture_output=capture, text=True).stdout


def psql(db, sql):
    return run([STACK, "psql", "-d", db, "-v", "ON_ERROR_STOP=1", "-tAc", sql]).strip()


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def lake_progress(lake, topic, partitions=16):
    """The lake's progress summed over partitions: each partition's txn version in the
    Delta tables (the lower of the events and retractions tables), read with deltalake."""
    from deltalake import DeltaTable
    if not pathlib.Path(lake, "_delta_log").exists() or not pathlib.Path(lake, "_retractions/_delta_log").exists():
        return 0
    tables = [DeltaTable(lake), DeltaTable(f"{lake}/_retractions")]
    total = 0
    for p in range(partitions):
        versions = [t.transaction_version(f"eventline/{topic}/{p}") for t in tables]
        total += min(versions) if None not in versions else 0
    return total


class Slice:
    """A topic, a database and a lake folder of their own."""

    def __init__(self, name, partitions=3):
        suffix = uuid.uuid4().hex[:8]
        self.topic, self.db = f"bench.{name}.{suffix}", f"bench_{name}_{suffix}"
        self.lake = str(WORK / f"lake-{name}-{suffix}")
        self.admin = f"127.0.0.1:{free_port()}"
        run([STACK, "topic", self.topic, str(partitions)])
        run([STACK, "topic", self.topic + ".dlq", "1"])
        psql("postgres", f"CREATE DATABASE {self.db}")
        self.env = dict(os.environ, EVENTLINE_ENV="local", EVENTLINE__KAFKA__TOPIC=self.topic, EVENTLINE__KAFKA__DLQ_TOPIC=self.topic + ".dlq",
                        EVENTLINE__KAFKA__GROUP_ID=f"bench-{suffix}", EVENTLINE__POSTGRES__URL=f"{PG_BASE}/{self.db}", EVENTLINE__LAKE__ROOT=self.lake,
                        EVENTLINE__ADMIN__LISTEN=self.admin, EVENTLINE__SUPERVISION__LOG_PATH=str(WORK / f"supervision-{suffix}.jsonl"), RUST_LOG="warn")
        run([BIN, "migrate"], env=self.env)

    def produce(self, n, rate=None):
        args = [BIN, "produce", "--generate", str(n), "--seed", "42", "--duplicate-ratio", "0.05", "--invalid-ratio", "0.01", "--topic", self.topic]
        if rate:
            # A paced run measures latency: the producer sends each record at once
            # rather than waiting to fill a batch, as a latency-minded client would.
            args += ["--rate", str(rate), "--linger-ms", "5"]
        run(args, env=self.env)

    def durable(self):
        """Both sinks' durable progress (records) from the processor's own metrics: a
        cheap HTTP read, so polling does not take CPU from what is being measured (a
        psql per poll did). (0, 0) until the processor answers."""
        try:
            text = urllib.request.urlopen(f"http://{self.admin}/metrics", timeout=2).read().decode()
        except OSError:
            return 0, 0
        sums = {"postgres": 0, "lake": 0}
        for line in text.splitlines():
            if line.startswith("eventline_sink_progress_offset{"):
                labels, value = line[len("eventline_sink_progress_offset{"):].split("}")
                sink = dict(kv.split("=") for kv in labels.split(","))["sink"].strip('"')
                sums[sink] += int(float(value))
        return sums["postgres"], sums["lake"]

    def wait_ready(self, process, timeout=60):
        """Until the processor's /ready says partitions are assigned and both sinks are up."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"processor exited with {process.returncode}; see {WORK}/{self.topic}.log")
            try:
                if urllib.request.urlopen(f"http://{self.admin}/ready", timeout=2).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise SystemExit(f"processor not ready after {timeout}s; see {WORK}/{self.topic}.log")

    def progress(self):
        pg = int(psql(self.db, f"SELECT coalesce(sum(next_offset),0) FROM sink_progress WHERE sink='postgres' AND topic='{self.topic}'") or 0)
        return pg, lake_progress(self.lake, self.topic)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def proc_stats(pid, memory="VmHWM"):
    """(bytes of `memory`: the peak RSS, or VmRSS for the current one; CPU seconds)."""
    rss = 0
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(memory + ":"):
            rss = int(line.split()[1]) * 1024
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return rss, cpu


def run_processor_until(slice_, end, timeout=900):
    """Starts eventline run, waits until both sinks stored `end` records; returns stats."""
    started = time.perf_counter()
    p = subprocess.Popen([BIN, "run"], env=slice_.env, stderr=open(WORK / f"{slice_.topic}.log", "w"))
    samples = []
    try:
        while True:
            pg, lake = slice_.durable()
            rss, cpu = proc_stats(p.pid)
            samples.append((time.perf_counter() - started, rss))
            if pg >= end and lake >= end:
                break
            if p.poll() is not None or time.perf_counter() - started > timeout:
                raise SystemExit(f"processor stopped or timed out; see {WORK}/{slice_.topic}.log")
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        rss, cpu = proc_stats(p.pid)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)
    if min(slice_.progress()) < end:
        raise SystemExit(f"the metrics said {end} records were durable, the stored progress says {slice_.progress()}")
    return {"seconds": elapsed, "peak_rss_bytes": rss, "cpu_seconds": cpu, "rss_samples": samples}


def postgres_limit(source, tables=("processed_events", "events")):
    """COPY of the same accepted rows into the same tables and indexes, with psql: both
    tables eventline writes, or `events` alone (what one row per event would cost)."""
    target = Slice("pgcopy" if len(tables) > 1 else "pgcopy1", partitions=1)
    columns = {"processed_events": "event_id, topic, partition, \"offset\", payload_hash",
               "events": "event_id, event_type, schema_version, source, occurred_at, payload, payload_hash, topic, partition, \"offset\", kafka_timestamp, normalized"}
    files = {}
    for table, cols in [(t, columns[t]) for t in tables]:
        path = WORK / f"{target.db}-{table}.csv"
        run([STACK, "psql", "-d", source.db, "-c", f"\\copy (SELECT {cols} FROM {table}) TO '{path}' WITH (FORMAT csv)"])
        files[table] = (path, cols)
    rows = int(psql(source.db, "SELECT count(*) FROM events"))
    started = time.perf_counter()
    for table, (path, cols) in files.items():
        run([STACK, "psql", "-d", target.db, "-c", f"\\copy {table} ({cols}) FROM '{path}' WITH (FORMAT csv)"])
    return {"rows": rows, "seconds": time.perf_counter() - started}


def bench_venv():
    """The virtualenv's python, with bench/requirements.txt: the Python baseline and the
    Kafka Connect peer's Kafka and Postgres clients."""
    venv = ROOT / ".cache/bench-venv"
    if not (venv / "bin/python").exists():
        log("creating the bench's virtualenv (bench/requirements.txt)")
        run([sys.executable, "-m", "venv", str(venv)])
    run([str(venv / "bin/pip"), "install", "-q", "-r", str(ROOT / "bench/requirements.txt")])
    return str(venv / "bin/python")


def baseline(n):
    python = bench_venv()
    s = Slice("baseline")
    s.produce(n)
    out = run([python, str(ROOT / "bench/baseline.py"), "--brokers", BROKERS, "--topic", s.topic, "--db", f"{PG_BASE}/{s.db}", "--lake", s.lake, "--records", str(n)])
    return json.loads(out)


def kafka_connect_peer(source, n):
    """bench/kafka_connect.py on the first n records of the main slice's topic; its
    progress lines go to stderr as they come."""
    args = [bench_venv(), str(ROOT / "bench/kafka_connect.py"), "--topic", source.topic, "--records", str(n)]
    return json.loads(subprocess.run(args, check=True, stdout=subprocess.PIPE, text=True).stdout)


def kafka_latency(rate, seconds):
    """The floor: Kafka alone (same producer, same rate, a consumer that does nothing)."""
    topic = f"bench.kafkalat.{uuid.uuid4().hex[:8]}"
    run([STACK, "topic", topic, "3"])
    n = int(rate * seconds)
    env = dict(os.environ, EVENTLINE_ENV="local", RUST_LOG="warn")
    reader = subprocess.Popen([BIN, "bench-limit", "kafka-latency", "--topic", topic, "--records", str(n)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if reader.stderr.readline().strip() != "ready":
        raise SystemExit("the Kafka latency reader did not start")
    run([BIN, "produce", "--generate", str(n), "--seed", "42", "--topic", topic, "--rate", str(rate), "--linger-ms", "5"], env=env)
    out, _ = reader.communicate(timeout=120)
    return {k: round(v, 1) for k, v in json.loads(out).items() if k in ("p50", "p95", "p99", "max")}


def latency(rate, seconds):
    floor = kafka_latency(rate, seconds)
    s = Slice(f"lat{int(rate)}")
    n = int(rate * seconds)
    p = subprocess.Popen([BIN, "run"], env=s.env, stderr=open(WORK / f"{s.topic}.log", "w"))
    try:
        s.wait_ready(p)  # start-up (joining the group, connecting) is not latency
        s.produce(n, rate=rate)
        deadline = time.time() + 300
        while min(s.durable()) < n and time.time() < deadline:
            time.sleep(0.1)
        rss, cpu = proc_stats(p.pid)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)
    q = psql(s.db, "SELECT concat_ws(',', percentile_cont(0.5) WITHIN GROUP (ORDER BY d), percentile_cont(0.95) WITHIN GROUP (ORDER BY d), "
                   "percentile_cont(0.99) WITHIN GROUP (ORDER BY d), max(d)) FROM (SELECT extract(epoch FROM received_at - kafka_timestamp) * 1000 AS d FROM events) x")
    pg = [round(float(v), 1) for v in q.split(",")]
    import duckdb
    lake = duckdb.sql(f"""SELECT quantile_cont(d, 0.5), quantile_cont(d, 0.95), quantile_cont(d, 0.99), max(d) FROM (
        SELECT epoch_ms(ingested_at) - epoch_ms(kafka_timestamp) AS d FROM read_parquet('{s.lake}/event_type=*/*/*/*/*.parquet'))""").fetchone()
    files = list(pathlib.Path(s.lake).glob("event_type=*/*/*/*/*.parquet"))
    # Paced traffic makes small files: what `eventline lake compact` makes of them.
    started = time.time()
    compaction = json.loads(run([BIN, "lake", "compact", "--json"], env=s.env))
    compaction["seconds"] = round(time.time() - started, 2)
    return {"rate": rate, "records": n, "postgres_ms": dict(zip(["p50", "p95", "p99", "max"], pg)), "kafka_only_ms": floor,
            "lake_ms": dict(zip(["p50", "p95", "p99", "max"], [round(float(v), 1) for v in lake])),
            "lake_files": len(files), "lake_mean_file_bytes": int(sum(f.stat().st_size for f in files) / max(len(files), 1)),
            "compaction": compaction, "peak_rss_bytes": rss, "cpu_seconds": cpu}


def storage(slice_, accepted):
    """What the run's data costs on disk per accepted event: each Postgres table with
    its indexes and TOAST (pg_total_relation_size), and the lake's files (data and
    Delta log). Taken right after the drain, before any vacuum."""
    rows = psql(slice_.db, "SELECT c.relname, pg_total_relation_size(c.oid), pg_indexes_size(c.oid) "
                           "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                           "WHERE n.nspname = current_schema() AND c.relkind = 'r' "
                           "AND c.relname <> '__diesel_schema_migrations' ORDER BY 2 DESC")
    tables = {}
    for line in rows.splitlines():
        name, total, indexes = line.split("|")
        tables[name] = {"bytes": int(total), "index_bytes": int(indexes), "bytes_per_event": int(total) / max(accepted, 1)}
    lake = sum(f.stat().st_size for f in pathlib.Path(slice_.lake).rglob("*") if f.is_file())
    postgres = sum(t["bytes"] for t in tables.values())
    return {"accepted": accepted, "postgres_bytes": postgres, "postgres_bytes_per_event": postgres / max(accepted, 1),
            "lake_bytes": lake, "lake_bytes_per_event": lake / max(accepted, 1), "tables": tables}


def targets(result):
    """Issue 19's targets, each as (what, figure, limit, met), from this run's figures:
    ratios against a limit or a peer measured in the same run, never absolute rates."""
    e, out = result["eventline"], []
    out.append(("end to end / slowest single-sink limit", result["fraction_of_slowest_limit"], 0.8, result["fraction_of_slowest_limit"] >= 0.8))
    connect = result["times_kafka_connect_steady"]
    if connect == connect:
        out.append(("end to end / Kafka Connect's steady rate", connect, 5.0, connect >= 5.0))
    file_age_ms = DEFAULTS["lake"]["max_file_age_ms"]
    backlog_cpu_us = e["cpu_seconds"] / result["events"] * 1e6
    for l in result["latency"]:
        if l["rate"] in (1_000, 10_000):
            limit = l["kafka_only_ms"]["p99"] + 15
            out.append((f"postgres p99 at {l['rate']:,}/s, ms (Kafka alone + 15)", l["postgres_ms"]["p99"], limit, l["postgres_ms"]["p99"] <= limit))
        out.append((f"lake p99 at {l['rate']:,}/s, ms (max_file_age_ms + 1 s)", l["lake_ms"]["p99"], file_age_ms + 1000, l["lake_ms"]["p99"] <= file_age_ms + 1000))
        if l["rate"] == 10_000:
            per_event = l["cpu_seconds"] / l["records"] * 1e6
            out.append(("CPU per event at 10,000/s, us (2x the backlog's)", per_event, 2 * backlog_cpu_us, per_event <= 2 * backlog_cpu_us))
    if "storage" in result:
        # Seed 001's promise, 1M events per GB (10^9 bytes) in Postgres.
        per_event = result["storage"]["postgres_bytes_per_event"]
        out.append(("Postgres bytes per accepted event (1M events/GB)", per_event, 1000, per_event <= 1000))
    for t in result.get("hot_keys", {}).get("targets", []):
        out.append((t["target"], t["ratio"], t["limit"], t["met"]))
    rss = [e["peak_rss_bytes"]] + [l["peak_rss_bytes"] for l in result["latency"]]
    out.append(("peak RSS over every run, MiB", max(rss) / 2**20, 256, max(rss) < 256 * 2**20))
    return [{"target": t, "figure": round(v, 2), "limit": round(lim, 2), "met": ok} for t, v, lim, ok in out]


def svg_chart(result, path):
    connect = result["kafka_connect"]
    bars = ([("eventline", result["eventline"]["per_second"])] + [(k, v["per_second"]) for k, v in result["limits"].items()] + [("python baseline", result["baseline"]["per_second"])]
            + [("kafka connect, steady", connect["steady_per_second"]), ("kafka connect + start-up", connect["per_second"])])
    bars = [(k, v) for k, v in bars if v == v]  # a skipped measure is NaN
    top = max(v for _, v in bars) or 1
    goals = result.get("targets", [])
    height = 60 + 34 * len(bars) + 40 + 34 * len(result["latency"]) + (40 + 22 * len(goals) if goals else 0)
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="760" height="%d" font-family="sans-serif" font-size="13">' % height]
    out.append('<text x="10" y="22" font-size="16">Throughput, input records per second (same run)</text>')
    for i, (name, v) in enumerate(bars):
        y = 40 + 34 * i
        out.append(f'<text x="10" y="{y + 17}">{name}</text><rect x="190" y="{y}" width="{int(480 * v / top)}" height="24" fill="#3b7dd8"/><text x="{196 + int(480 * v / top)}" y="{y + 17}">{v:,.0f}</text>')
    y0 = 60 + 34 * len(bars)
    out.append(f'<text x="10" y="{y0}" font-size="16">Latency to Postgres (ms): p50 / p95 / p99 / max</text>')
    for i, l in enumerate(result["latency"]):
        ms = l["postgres_ms"]
        out.append(f'<text x="10" y="{y0 + 26 + 34 * i}">{l["rate"]:,.0f}/s: {ms["p50"]} / {ms["p95"]} / {ms["p99"]} / {ms["max"]}   lake p99 {l["lake_ms"]["p99"]} ms, {l["lake_files"]} files</text>')
    y1 = y0 + 34 * len(result["latency"]) + 40
    if goals:
        out.append(f'<text x="10" y="{y1}" font-size="16">Targets (issue 19): figure / limit</text>')
    for i, t in enumerate(goals):
        colour = "#2a7d2a" if t["met"] else "#c0392b"
        out.append(f'<text x="10" y="{y1 + 22 * (i + 1)}" fill="{colour}">{t["target"]}: {t["figure"]:,} / {t["limit"]:,} {"met" if t["met"] else "not met"}</text>')
    out.append("</svg>")
    pathlib.Path(path).write_text("\n".join(out))


def forget_previous_runs():
    """Removes the databases, topics and folders earlier bench runs left (about 1.3 GB per
    full run). The latest run's stay until the next one starts, for inspection."""
    dbs = [d for d in psql("postgres", "SELECT datname FROM pg_database WHERE datname LIKE 'bench\\_%'").split() if d]
    for db in dbs:
        psql("postgres", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    run([STACK, "topics-delete", r"bench\..*"])
    if WORK.exists():
        shutil.rmtree(WORK)
    if dbs:
        log(f"removed {len(dbs)} databases, their topics and folders from earlier runs")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--baseline-events", type=int, default=30_000)
    ap.add_argument("--latency-seconds", type=int, default=60)
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--skip-baseline", action="store_true", help="no Python baseline (for tuning)")
    ap.add_argument("--connect-events", type=int, help="records of the main topic for Kafka Connect (at most --events; default 200,000 or --events if fewer)")
    ap.add_argument("--skip-connect", action="store_true", help="no Kafka Connect peer (for tuning)")
    ap.add_argument("--hot-keys-events", type=int, default=20_000, help="events per phase of the hot-keys run (bench/hot_keys.py)")
    ap.add_argument("--skip-hot-keys", action="store_true", help="no hot-keys run (for tuning)")
    ap.add_argument("--latency-only", type=str, metavar="RATES", help="only the latency runs, at these comma-separated rates (for tuning)")
    a = ap.parse_args()
    if (a.connect_events or 0) > a.events:
        ap.error("--connect-events reads the main topic: at most --events")
    a.connect_events = a.connect_events or min(200_000, a.events)
    forget_previous_runs()
    if a.latency_only:
        WORK.mkdir(parents=True, exist_ok=True)
        for rate in [int(r) for r in a.latency_only.split(",")]:
            log(f"latency at {rate:,}/s for {a.latency_seconds}s")
            print_latency(latency(rate, a.latency_seconds))
        return
    WORK.mkdir(parents=True, exist_ok=True)
    result = {"events": a.events, "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "limits": {}}

    log(f"pre-loading {a.events:,} generated events (5% duplicates, 1% invalid)")
    main_slice = Slice("throughput")
    main_slice.produce(a.events)
    log("eventline draining the topic into both sinks")
    e = run_processor_until(main_slice, a.events)
    e["per_second"] = a.events / e["seconds"]
    e.pop("rss_samples")
    result["eventline"] = e
    accepted = int(psql(main_slice.db, "SELECT count(*) FROM events"))
    result["accepted_rows"] = accepted
    result["storage"] = storage(main_slice, accepted)

    log("limit: consume only")
    c = json.loads(run([BIN, "bench-limit", "consume-only", "--topic", main_slice.topic], env=main_slice.env))
    result["limits"]["consume only"] = {"per_second": c["per_second"], "seconds": c["seconds"]}
    log("limit: Postgres only (COPY of the same rows)")
    pg = postgres_limit(main_slice)
    result["limits"]["postgres COPY only"] = {"per_second": a.events / pg["seconds"], "rows_per_second": pg["rows"] / pg["seconds"], "seconds": pg["seconds"]}
    log("limit: Postgres only, one table (COPY of the same rows into events alone)")
    pg1 = postgres_limit(main_slice, tables=("events",))
    result["limits"]["postgres COPY, events only"] = {"per_second": a.events / pg1["seconds"], "rows_per_second": pg1["rows"] / pg1["seconds"], "seconds": pg1["seconds"]}
    log("limit: lake only (the same rows as Parquet)")
    lk = json.loads(run([BIN, "bench-limit", "lake-only", "--topic", main_slice.topic, "--root", str(WORK / f"lake-limit-{uuid.uuid4().hex[:6]}")], env=main_slice.env))
    result["limits"]["lake only"] = {"per_second": a.events / lk["seconds"], "rows_per_second": lk["per_second"], "seconds": lk["seconds"]}
    slowest = min(result["limits"].items(), key=lambda kv: kv[1]["per_second"])
    result["fraction_of_slowest_limit"] = e["per_second"] / slowest[1]["per_second"]
    result["slowest_limit"] = slowest[0]

    if a.skip_baseline:
        result["baseline"] = {"per_second": float("nan")}
    else:
        log(f"baseline: Python consumer on {a.baseline_events:,} records")
        result["baseline"] = baseline(a.baseline_events)
    result["times_baseline"] = e["per_second"] / result["baseline"]["per_second"]

    if a.skip_connect:
        result["kafka_connect"] = {"per_second": float("nan"), "steady_per_second": float("nan")}
    else:
        log(f"peer: Kafka Connect + Debezium's JDBC sink on the first {a.connect_events:,} records")
        result["kafka_connect"] = kafka_connect_peer(main_slice, a.connect_events)
    result["times_kafka_connect"] = e["per_second"] / result["kafka_connect"]["per_second"]
    result["times_kafka_connect_steady"] = e["per_second"] / result["kafka_connect"]["steady_per_second"]

    result["latency"] = []
    if not a.skip_latency:
        for rate in [1_000, 10_000, int(e["per_second"] / 2)]:
            log(f"latency at {rate:,}/s for {a.latency_seconds}s")
            result["latency"].append(latency(rate, a.latency_seconds))

    if not a.skip_hot_keys:
        import hot_keys  # confluent-kafka, installed by scripts/deps.sh
        result["hot_keys"] = hot_keys.measure(2000, a.hot_keys_events)

    reports = ROOT / "reports"
    reports.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    json_path, svg_path = reports / f"bench-{stamp}.json", reports / f"bench-{stamp}.svg"
    result["targets"] = targets(result)
    json_path.write_text(json.dumps(result, indent=2))
    svg_chart(result, svg_path)

    kc = result["kafka_connect"]
    print(f"\n{'measure':<42}{'records/s':>14}{'vs eventline':>14}")
    print(f"{'eventline end to end':<42}{e['per_second']:>14,.0f}{'1.00':>14}")
    for k, v in result["limits"].items():
        print(f"{'limit: ' + k:<42}{v['per_second']:>14,.0f}{e['per_second'] / v['per_second']:>14.2f}")
    print(f"{'python baseline':<42}{result['baseline']['per_second']:>14,.0f}{result['times_baseline']:>13.1f}x")
    print(f"{'kafka connect (JDBC sink, postgres only)':<42}{kc['steady_per_second']:>14,.0f}{result['times_kafka_connect_steady']:>13.1f}x")
    print(f"{'  the same, including its start-up':<42}{kc['per_second']:>14,.0f}{result['times_kafka_connect']:>13.1f}x")
    print(f"\neventline = {result['fraction_of_slowest_limit']:.0%} of the slowest limit ({slowest[0]}); {result['times_baseline']:.1f}x the Python baseline")
    print(f"peak RSS {e['peak_rss_bytes'] / 2**20:.0f} MiB, CPU {e['cpu_seconds']:.1f} s for {a.events:,} records ({accepted:,} accepted)")
    if not a.skip_connect:
        print(f"kafka connect: {kc['records']:,} records into {kc['rows']:,} rows in {kc['seconds']:.1f} s, first row after {kc['first_row_seconds']:.1f} s; "
              f"peak RSS {kc['peak_rss_bytes'] / 2**20:.0f} MiB, CPU {kc['cpu_seconds']:.1f} s")
    for l in result["latency"]:
        print_latency(l)
    print_storage(result["storage"])
    if "hot_keys" in result:
        import hot_keys
        hot_keys.print_result(result["hot_keys"])
    print(f"\n{'target (issues 19 and 30)':<58}{'figure':>10}{'limit':>10}  met")
    for t in result["targets"]:
        print(f"{t['target'][:58]:<58}{t['figure']:>10,.2f}{t['limit']:>10,.2f}  {'yes' if t['met'] else 'NO'}")
    print(f"\nresult: {json_path}\nchart:  {svg_path}")


def print_storage(st):
    print(f"\nstorage per accepted event ({st['accepted']:,} events): Postgres {st['postgres_bytes_per_event']:,.0f} bytes "
          f"({st['postgres_bytes'] / 2**20:,.1f} MiB), lake {st['lake_bytes_per_event']:,.0f} bytes ({st['lake_bytes'] / 2**20:,.1f} MiB)")
    print(f"  {'table':<28}{'bytes/event':>12}{'of which indexes':>18}")
    for name, t in st["tables"].items():
        if t["bytes_per_event"] >= 1:
            print(f"  {name:<28}{t['bytes_per_event']:>12,.0f}{t['index_bytes'] / max(st['accepted'], 1):>18,.0f}")


def print_latency(l):
    k = l["kafka_only_ms"]
    print(f"latency at {l['rate']:>7,}/s: postgres p50/p95/p99/max {l['postgres_ms']['p50']}/{l['postgres_ms']['p95']}/{l['postgres_ms']['p99']}/{l['postgres_ms']['max']} ms "
          f"(Kafka alone {k['p50']}/{k['p95']}/{k['p99']}/{k['max']} ms); "
          f"lake p99 {l['lake_ms']['p99']} ms, {l['lake_files']} files of {l['lake_mean_file_bytes'] / 1024:.0f} KiB; peak RSS {l['peak_rss_bytes'] / 2**20:.0f} MiB")
    c = l["compaction"]
    print(f"  lake compact: {c['files_before']} files ({c['bytes_before'] / 2**20:.1f} MiB) -> {c['files_after']} files "
          f"({c['bytes_after'] / 2**20:.1f} MiB) in {c['seconds']} s")


if __name__ == "__main__":
    main()
