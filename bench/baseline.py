"""A straightforward Kafka -> Postgres + Parquet consumer, as teams write it today.

confluent-kafka, Pydantic validation per event, one INSERT ... ON CONFLICT per event into
processed_events and events (a transaction per record), pyarrow files per batch. It reads
the first --records records of --topic and prints {"records": n, "seconds": t} as JSON.
"""
import argparse
import datetime as dt
import json
import os
import sys
import time
import uuid
from typing import Literal, Optional

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
from confluent_kafka import Consumer
from pydantic import AwareDatetime, BaseModel, EmailStr, Field, ValidationError  # noqa: F401

Stage = Literal["prospecting", "qualification", "proposal", "negotiation", "closed_won", "closed_lost"]
Region = Literal["AMER", "EMEA", "APAC", "LATAM"]


class AccountCreated(BaseModel):
    account_id: str = Field(pattern=r"^acc_[A-Za-z0-9]{4,32}$")
    industry: str
    region: Region
    name: Optional[str] = None
    country: Optional[str] = Field(default=None, pattern=r"^[A-Z]{2}$")
    employee_count: Optional[int] = Field(default=None, ge=1)


class AccountUpdated(BaseModel):
    account_id: str = Field(pattern=r"^acc_[A-Za-z0-9]{4,32}$")
    changes: dict


class ContactCreated(BaseModel):
    contact_id: str = Field(pattern=r"^con_[A-Za-z0-9]{4,32}$")
    account_id: str = Field(pattern=r"^acc_[A-Za-z0-9]{4,32}$")
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")


class OpportunityCreated(BaseModel):
    opportunity_id: str = Field(pattern=r"^opp_[A-Za-z0-9]{4,32}$")
    account_id: str
    amount: float = Field(ge=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    stage: Stage


class OpportunityStageChanged(BaseModel):
    opportunity_id: str = Field(pattern=r"^opp_[A-Za-z0-9]{4,32}$")
    account_id: str
    from_stage: Stage
    to_stage: Stage


PAYLOADS = {
    "account_created": AccountCreated,
    "account_updated": AccountUpdated,
    "contact_created": ContactCreated,
    "opportunity_created": OpportunityCreated,
    "opportunity_stage_changed": OpportunityStageChanged,
}


class Envelope(BaseModel):
    event_id: uuid.UUID
    event_type: str
    source: str
    timestamp: AwareDatetime
    schema_version: int = 1
    payload: dict


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--lake", required=True)
    ap.add_argument("--records", type=int, required=True)
    a = ap.parse_args()
    os.makedirs(a.lake, exist_ok=True)
    consumer = Consumer({"bootstrap.servers": a.brokers, "group.id": f"baseline-{uuid.uuid4()}", "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([a.topic])
    conn = psycopg.connect(a.db)
    rows, seen, started, files = [], 0, None, 0
    while seen < a.records:
        msg = consumer.poll(5.0)
        if msg is None:
            if started is not None:
                break
            continue
        if msg.error():
            continue
        started = started or time.perf_counter()
        seen += 1
        try:
            env = Envelope.model_validate_json(msg.value() or b"null")
            model = PAYLOADS.get(env.event_type)
            if model is None:
                raise ValueError("unknown event type")
            model.model_validate(env.payload)
        except (ValidationError, ValueError) as e:
            with conn.transaction():
                conn.execute("INSERT INTO dead_letters (topic, partition, \"offset\", record_value, error_class, error_message) VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING",
                             (msg.topic(), msg.partition(), msg.offset(), msg.value(), "invalid", str(e)[:500]))
            continue
        with conn.transaction():
            cur = conn.execute("INSERT INTO processed_events (event_id, topic, partition, \"offset\", payload_hash) VALUES (%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING RETURNING event_id",
                               (env.event_id, msg.topic(), msg.partition(), msg.offset(), str(hash(msg.value()))))
            if cur.fetchone() is None:
                continue
            conn.execute("INSERT INTO events (event_id, event_type, schema_version, source, occurred_at, payload, payload_hash, topic, partition, \"offset\") VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING",
                         (env.event_id, env.event_type, env.schema_version, env.source, env.timestamp, json.dumps(env.payload), "", msg.topic(), msg.partition(), msg.offset()))
        rows.append({"event_id": str(env.event_id), "event_type": env.event_type, "occurred_at": env.timestamp, "payload": json.dumps(env.payload)})
        if len(rows) >= 1000:
            pq.write_table(pa.Table.from_pylist(rows), os.path.join(a.lake, f"part-{files:06}.parquet"), compression="zstd")
            files += 1
            rows = []
            consumer.commit(asynchronous=False)
    if rows:
        pq.write_table(pa.Table.from_pylist(rows), os.path.join(a.lake, f"part-{files:06}.parquet"), compression="zstd")
    consumer.commit(asynchronous=False)
    elapsed = time.perf_counter() - (started or time.perf_counter())
    print(json.dumps({"records": seen, "seconds": elapsed, "per_second": seen / max(elapsed, 1e-9)}))


if __name__ == "__main__":
    sys.exit(main())
