#!/usr/bin/env bash
# make bench-produce: `eventline produce --generate` into the local broker against Kafka's
# own producer benchmark (org.apache.kafka.tools.ProducerPerformance, same record size,
# same producer settings) measured in the same run. Prints both rates and the ratio.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N="${1:-1000000}"
BROKERS=$(python3 -c 'import tomllib;print(tomllib.load(open("'"$ROOT"'/settings/local.toml","rb"))["kafka"]["brokers"])')
T1="bench.produce.$(date +%s)"; T2="$T1.kafka-perf"
"$ROOT/scripts/stack.sh" topic "$T1" 3
"$ROOT/scripts/stack.sh" topic "$T2" 3
out=$("$ROOT/target/release/eventline" produce --generate "$N" --seed 1 --topic "$T1" 2>&1)
ours=$(echo "$out" | sed -n 's/.*confirmed, in .* (\([0-9]*\) events\/s).*/\1/p')
size=330
perf=$(java -Xmx512m -cp "$ROOT/.cache/kafka-3.9.1/libs/*" -Dlog4j.configuration="file:$ROOT/scripts/kafka/log4j.properties" -Dkafka.logs.dir="$ROOT/.dev/kafka/logs" \
  org.apache.kafka.tools.ProducerPerformance --topic "$T2" --num-records "$N" --record-size "$size" --throughput -1 \
  --producer-props bootstrap.servers="$BROKERS" enable.idempotence=true acks=all linger.ms=10 batch.size=1000000 compression.type=lz4 2>/dev/null | tail -1)
theirs=$(echo "$perf" | sed -n 's/^[0-9]* records sent, \([0-9.]*\) records\/sec.*/\1/p')
echo "eventline produce --generate: $ours events/s ($N generated CRM events, ~330 bytes, keyed, idempotent)"
echo "Kafka ProducerPerformance:    ${theirs%.*} records/s ($N records of $size bytes, same producer settings)"
python3 -c "print(f'ratio: {$ours/$theirs:.2f} of what the broker takes from Kafka\'s own Java producer in the same run')"
