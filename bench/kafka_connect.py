#!/usr/bin/env python3
"""The bench's real peer: a Kafka Connect standalone worker running Debezium's JDBC sink,
upserting the same generated events into Postgres (one table keyed by event_id).

Runs in the bench's virtualenv (confluent-kafka, psycopg): `make bench` starts it as
`.cache/bench-venv/bin/python bench/kafka_connect.py --topic T --records N`, and it prints
measure()'s result as JSON. Before the clock starts it fetches Connect and the connector
from Maven Central (cached under .cache/) and re-encodes the first N records of T, the
bench's main topic, into a topic of its own in the JSON-with-schema envelope the
connector needs. Records that are not JSON objects with an event_id (the generator's
truncated ones) cannot be put in that envelope and are left out; the other invalid ones
(a bad id, an unknown type, a bad field) are carried, since Connect checks no contract.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import urllib.request
import uuid

import psycopg
from confluent_kafka import Consumer, Producer, TopicPartition

sys.path.insert(0, os.path.dirname(__file__))
from run_bench import BROKERS, PG_BASE, ROOT, STACK, WORK, free_port, log, proc_stats, psql, run  # noqa: E402

# Debezium's JDBC sink 3.6.0 is built against Kafka 4.3.0 (3.6.1's plugin archive is not
# on Maven Central); the 4.3.1 worker matches it and talks to the local 3.9 broker.
CONNECT_VERSION = "4.3.1"
DEBEZIUM_VERSION = "3.6.0.Final"
CACHE = ROOT / f".cache/kafka-connect-{CONNECT_VERSION}-debezium-jdbc-{DEBEZIUM_VERSION}"
POM = ROOT / "scripts/kafka/connect-pom.xml"
HEAP = "512m"
# Debezium's docs: batch.size is capped by the consumer's max.poll.records, so raise both.
BATCH = 4_000
TASKS = 3

FIELDS = [("event_id", "string", False), ("event_type", "string", True), ("schema_version", "int32", True),
          ("source", "string", True), ("occurred_at", "string", True), ("payload", "string", True),
          ("source_topic", "string", False), ("source_partition", "int32", False), ("source_offset", "int64", False)]
SCHEMA = {"type": "struct", "name": "bench_event", "optional": False,
          "fields": [{"field": f, "type": t, "optional": o} for f, t, o in FIELDS]}


def fetch():
    """The worker's jars and the unpacked connector under CACHE; a no-op once there. Built
    beside it and renamed, so an interrupted fetch never looks complete."""
    libs, plugins = CACHE / "libs", CACHE / "plugins"
    if (libs / f"connect-runtime-{CONNECT_VERSION}.jar").exists() and (plugins / "debezium-connector-jdbc").is_dir():
        return libs, plugins
    log(f"fetching Kafka Connect {CONNECT_VERSION} and Debezium's JDBC sink {DEBEZIUM_VERSION} from Maven Central into {CACHE}")
    part = CACHE.with_name(CACHE.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    mvn = ["mvn", "-q", "-B", "-Dstyle.color=never", "-f", str(POM), f"-Dconnect.version={CONNECT_VERSION}", f"-Ddebezium.version={DEBEZIUM_VERSION}"]
    run(mvn + ["dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={part / 'libs'}"])
    run(mvn + ["dependency:copy", f"-Dfetch.dir={part}"])
    archive = part / f"debezium-connector-jdbc-{DEBEZIUM_VERSION}-plugin.tar.gz"
    with tarfile.open(archive) as tar:
        tar.extractall(part / "plugins", filter="data")
    archive.unlink()
    shutil.rmtree(CACHE, ignore_errors=True)
    part.rename(CACHE)
    return libs, plugins


def reencode(source_topic, n, topic):
    """Copies the first n records read from the start of source_topic's partitions (all of
    them when n is the topic's size) into topic, same partition and key, as JSON with
    schema. Returns (records written, records left out, distinct event ids written)."""
    consumer = Consumer({"bootstrap.servers": BROKERS, "group.id": f"bench-reencode-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False})
    partitions = consumer.list_topics(source_topic, timeout=10).topics[source_topic].partitions
    consumer.assign([TopicPartition(source_topic, p, 0) for p in partitions])
    # The settings eventline's generator publishes with (src/cli/publisher.rs).
    producer = Producer({"bootstrap.servers": BROKERS, "enable.idempotence": True, "linger.ms": 10, "batch.size": 1_000_000,
                         "compression.type": "lz4", "queue.buffering.max.messages": 500_000})
    seen, written, ids = 0, 0, set()
    while seen < n:
        batch = consumer.consume(min(10_000, n - seen), timeout=10)
        if not batch:
            raise SystemExit(f"{source_topic} has only {seen} records, fewer than {n}")
        for msg in batch:
            if msg.error():
                raise SystemExit(f"reading {source_topic}: {msg.error()}")
            seen += 1
            value = envelope(msg)
            if value is None:
                continue
            ids.add(value["payload"]["event_id"])
            producer.produce(topic, json.dumps(value).encode(), msg.key(), partition=msg.partition())
            written += 1
            producer.poll(0)
    consumer.close()
    if producer.flush(60) != 0:
        raise SystemExit(f"could not deliver every re-encoded record to {topic}")
    return written, seen - written, len(ids)


def envelope(msg):
    """The record as {"schema", "payload"}, the event's payload as a JSON string; None for
    a record that is not a JSON object with a string event_id."""
    try:
        event = json.loads(msg.value() or b"null")
    except ValueError:
        return None
    if not isinstance(event, dict) or not isinstance(event.get("event_id"), str):
        return None
    version = event.get("schema_version")
    row = {"event_id": event["event_id"], "event_type": event.get("event_type"), "schema_version": version if isinstance(version, int) else None,
           "source": event.get("source"), "occurred_at": event.get("timestamp"), "payload": json.dumps(event.get("payload")),
           "source_topic": msg.topic(), "source_partition": msg.partition(), "source_offset": msg.offset()}
    return {"schema": SCHEMA, "payload": row}


def write_config(work, plugins, topic, db, suffix):
    """The worker's and the connector's properties, and Log4j's, in the work folder."""
    worker = {
        "bootstrap.servers": BROKERS,
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter.schemas.enable": "true",
        "offset.storage.file.filename": work / "connect.offsets",
        "plugin.path": plugins,
        # What the worker advises once it finds every plugin has a ServiceLoader manifest:
        # start-up skips the reflective scan of every jar (about 6 s here).
        "plugin.discovery": "service_load",
        "listeners": f"http://127.0.0.1:{free_port()}",
        # lets the connector raise its consumer's max.poll.records (consumer.override.*)
        "connector.client.config.override.policy": "All",
        "consumer.auto.offset.reset": "earliest",
    }
    pg = PG_BASE.split("://", 1)[1]
    user, host = pg.split("@", 1)
    connector = {
        "name": f"bench-jdbc-sink-{suffix}",  # also names its consumer group: a fresh one each run
        "connector.class": "io.debezium.connector.jdbc.JdbcSinkConnector",
        "tasks.max": TASKS,
        "topics": topic,
        "connection.url": f"jdbc:postgresql://{host}/{db}",
        "connection.username": user,
        "connection.password": "",
        "insert.mode": "upsert",
        "primary.key.mode": "record_value",
        "primary.key.fields": "event_id",
        "schema.evolution": "basic",
        "collection.name.format": "events",
        "batch.size": BATCH,
        "consumer.override.max.poll.records": BATCH,
    }
    log4j = {
        "appender.file.type": "File", "appender.file.name": "file", "appender.file.fileName": work / "connect.log",
        "appender.file.layout.type": "PatternLayout", "appender.file.layout.pattern": "[%d] %p %m (%c)%n",
        "rootLogger.level": "INFO", "rootLogger.appenderRef.file.ref": "file",
    }
    for name, props in [("worker", worker), ("connector", connector), ("log4j2", log4j)]:
        (work / f"{name}.properties").write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    return worker, connector


def start_worker(work, libs):
    # The heap is capped at 512 MiB; the GC flags are those Kafka's own launch script
    # (kafka-run-class.sh) gives every JVM.
    java = ["java", "-Xms256m", f"-Xmx{HEAP}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent", "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={work / 'log4j2.properties'}",
            "-cp", f"{libs}/*", "org.apache.kafka.connect.cli.ConnectStandalone", str(work / "worker.properties"), str(work / "connector.properties")]
    return subprocess.Popen(java, stdout=open(work / "stdout.log", "w"), stderr=subprocess.STDOUT), java


def stop(process):
    """SIGTERM (Connect shuts down cleanly), then SIGKILL: no JVM outlives the measure."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def rows(conn):
    """Rows in the connector's table; 0 until it has created it."""
    if conn.execute("SELECT to_regclass('events') IS NULL").fetchone()[0]:
        return 0
    return conn.execute("SELECT count(*) FROM events").fetchone()[0]


def failure(worker, connector):
    """The first failed task's (or the connector's) error from the worker's REST API, or None."""
    url = f"{worker['listeners']}/connectors/{connector['name']}/status"
    try:
        status = json.load(urllib.request.urlopen(url, timeout=2))
    except OSError:
        return None
    for part in [status["connector"]] + status["tasks"]:
        if part["state"] == "FAILED":
            return (part.get("trace") or "FAILED").splitlines()[0]
    return None


def wait_for_rows(process, conn, expected, work, worker, connector, timeout):
    """Counts rows until `expected` are there. Returns (seconds to the first row, rows
    then, seconds to the last) since the worker started. A count reads the whole table
    (about 20 ms at 190,000 rows), so once rows come it is not repeated every 0.2 s but
    after half the time the missing rows should take at the rate so far (0.2 to 2 s):
    few counts while many rows are missing, and the last within 0.2 s of the end. A
    failed task does not stop the worker: after 5 s without progress, its status is asked."""
    started = time.perf_counter()
    first, last, changed = None, 0, started
    while True:
        count = rows(conn)
        now = time.perf_counter()
        if count and first is None:
            first = (now - started, count)
        if count >= expected:
            return first[0], first[1], now - started
        if count != last:
            last, changed = count, now
        error = failure(worker, connector) if now - changed > 5 else None
        if error or process.poll() is not None or now - started > timeout:
            raise SystemExit(f"Kafka Connect failed, stopped or timed out with {count:,} of {expected:,} rows ({error}); see {work}/connect.log")
        rate = (count - first[1]) / (now - started - first[0]) if first and count > first[1] else 0
        time.sleep(min(max((expected - count) / rate / 2, 0.2), 2.0) if rate else 0.2)


def measure(source_topic, n):
    """Kafka Connect + Debezium's JDBC sink on the first n records of source_topic: from
    the worker's start until every distinct event_id is a row."""
    libs, plugins = fetch()
    suffix = uuid.uuid4().hex[:8]
    topic, db = f"bench.connect.{suffix}", f"bench_connect_{suffix}"
    work = WORK / f"connect-{suffix}"  # like the topic and the database, what forget_previous_runs removes
    work.mkdir(parents=True, exist_ok=True)
    run([STACK, "topic", topic, "3"])
    psql("postgres", f"CREATE DATABASE {db}")
    log(f"re-encoding the first {n:,} records of {source_topic} as JSON with schema into {topic}")
    records, left_out, expected = reencode(source_topic, n, topic)
    worker, connector = write_config(work, plugins, topic, db, suffix)
    log(f"Kafka Connect {CONNECT_VERSION} + Debezium JDBC sink {DEBEZIUM_VERSION}: {records:,} records, {expected:,} distinct event ids, into {db}")
    conn = psycopg.connect(f"{PG_BASE}/{db}", autocommit=True)
    # A parallel count would start two more server processes on every poll.
    conn.execute("SET max_parallel_workers_per_gather = 0")
    process, java = start_worker(work, libs)
    try:
        first_seconds, first_rows, seconds = wait_for_rows(process, conn, expected, work, worker, connector, timeout=max(300, n / 500))
        rss, cpu = proc_stats(process.pid)
    finally:
        stop(process)
        conn.close()
    # In input records per second, like eventline's figure: rows scaled by records per row.
    steady_rows = (expected - first_rows) / (seconds - first_seconds) if seconds > first_seconds else float("nan")
    return {"records": records, "left_out": left_out, "rows": expected, "seconds": seconds, "per_second": records / seconds,
            "first_row_seconds": first_seconds, "steady_rows_per_second": steady_rows, "steady_per_second": steady_rows * records / expected,
            "peak_rss_bytes": rss, "cpu_seconds": cpu, "versions": {"connect-runtime": CONNECT_VERSION, "debezium-connector-jdbc": DEBEZIUM_VERSION},
            "config": {"worker": {k: str(v) for k, v in worker.items()}, "connector": {k: str(v) for k, v in connector.items()},
                       "jvm": [a for a in java if a.startswith("-X")]}}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--topic", required=True, help="the topic with the generated events (eventline produce)")
    ap.add_argument("--records", type=int, default=200_000)
    a = ap.parse_args()
    print(json.dumps(measure(a.topic, a.records), indent=2))


if __name__ == "__main__":
    main()
