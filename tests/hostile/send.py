#!/usr/bin/env python3
"""Sends records with confluent-kafka (librdkafka's Python client), a producer nobody
here wrote, for the hostile-input tests.

    send.py BROKERS TOPIC PLAN.json

PLAN.json is a list of groups, sent in order:
    {"transaction": null | "commit" | "abort", "records": [RECORD, ...]}
and each RECORD is
    {"partition": int | null, "key": hex | null, "value": hex | null,
     "headers": [[name, hex], ...]}
Bytes are hex so that any byte (NUL, invalid UTF-8) survives the JSON. A group with a
transaction is sent by one transactional producer (read_committed consumers never see
an aborted one); the others by an idempotent producer.
"""
import json
import sys
import uuid

import confluent_kafka as ck


def unhex(text):
    return None if text is None else bytes.fromhex(text)


def send(producer, topic, records):
    failures = []

    def delivered(err, _msg):
        if err is not None:
            failures.append(err)

    for r in records:
        kwargs = {"key": unhex(r.get("key")), "value": unhex(r.get("value")), "on_delivery": delivered}
        if r.get("partition") is not None:
            kwargs["partition"] = r["partition"]
        if r.get("headers"):
            kwargs["headers"] = [(name, unhex(value)) for name, value in r["headers"]]
        while True:
            try:
                producer.produce(topic, **kwargs)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    return failures


def main():
    brokers, topic, plan_path = sys.argv[1:4]
    plan = json.load(open(plan_path))
    common = {"bootstrap.servers": brokers, "message.max.bytes": 2_000_000, "linger.ms": 5}
    plain = ck.Producer({**common, "enable.idempotence": True})
    for group in plan:
        if group.get("transaction") is None:
            failures = send(plain, topic, group["records"])
            plain.flush(60)
        else:
            txn = ck.Producer({**common, "transactional.id": f"hostile-{uuid.uuid4()}"})
            txn.init_transactions(30)
            txn.begin_transaction()
            failures = send(txn, topic, group["records"])
            txn.flush(60)
            if group["transaction"] == "commit":
                txn.commit_transaction(30)
            else:
                txn.abort_transaction(30)
        if failures:
            sys.exit(f"not delivered: {failures[0]}")


if __name__ == "__main__":
    main()
