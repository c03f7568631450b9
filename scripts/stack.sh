#!/usr/bin/env bash
# Local stack without Docker: one Apache Kafka node in KRaft mode (official jars from
# Maven Central) and a throwaway PostgreSQL 15 cluster, both on 127.0.0.1.
#
#   scripts/stack.sh up|down|status|logs|clean|env
#
# Everything lives under .dev/ (data, logs, pid files) and .cache/ (jars); both are
# git-ignored. `up` is idempotent; `down` stops only what this script started.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEV="$ROOT/.dev"
CACHE="$ROOT/.cache"
KAFKA_VERSION="3.9.1"
KAFKA_LIBS="$CACHE/kafka-$KAFKA_VERSION/libs"
KAFKA_DIR="$DEV/kafka"
PG_DIR="$DEV/pg"
PG_BIN="/usr/lib/postgresql/15/bin"
KAFKA_HEAP="${EVENTLINE_KAFKA_HEAP:-512m}"
START_TIMEOUT="${EVENTLINE_START_TIMEOUT:-90}"

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

# --- settings: the same file the processor reads -----------------------------------
read_settings() {
  eval "$(python3 - "$ROOT/settings/local.toml" <<'PY'
import sys, tomllib, urllib.parse
s = tomllib.load(open(sys.argv[1], "rb"))
host, port = s["kafka"]["brokers"].split(",")[0].rsplit(":", 1)
u = urllib.parse.urlparse(s["postgres"]["url"])
print(f"KAFKA_HOST={host} KAFKA_PORT={port} CONTROLLER_PORT={int(port) + 1}")
print(f"PG_HOST={u.hostname} PG_PORT={u.port or 5432} PG_USER={u.username} PG_DB={u.path.lstrip('/')}")
PY
)"
  # Ports can be overridden, e.g. for a drill that needs a second cluster or for the
  # check that a second checkout's stack starts beside this one (scripts/check-private-clone.sh).
  PG_PORT="${EVENTLINE_PG_PORT:-$PG_PORT}"
  KAFKA_PORT="${EVENTLINE_KAFKA_PORT:-$KAFKA_PORT}"
  CONTROLLER_PORT=$((KAFKA_PORT + 1))
}

# --- helpers -------------------------------------------------------------------------
pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() { # description, log file, command...
  local what="$1" logfile="$2"; shift 2
  local deadline=$((SECONDS + START_TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      die "$what did not answer within ${START_TIMEOUT}s; read $logfile"
    fi
    sleep 0.5
  done
}

ensure_packages() {
  local missing=()
  command -v java >/dev/null || missing+=(default-jre-headless)
  command -v mvn >/dev/null || missing+=(maven)
  [ -x "$PG_BIN/initdb" ] || missing+=(postgresql-15)
  command -v psql >/dev/null || missing+=(postgresql-client-15)
  command -v python3 >/dev/null || missing+=(python3)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# --- Kafka ---------------------------------------------------------------------------
kafka_java() { java -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -cp "$KAFKA_LIBS/*" \
  -Dlog4j.configuration="file:$ROOT/scripts/kafka/log4j.properties" -Dkafka.logs.dir="$KAFKA_DIR/logs" "$@"; }

fetch_kafka() {
  [ -f "$KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar" ] && return
  log "fetching Apache Kafka $KAFKA_VERSION from Maven Central into $KAFKA_LIBS"
  mkdir -p "$KAFKA_LIBS"
  mvn -q -B -Dstyle.color=never -f "$ROOT/scripts/kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS"
}

kafka_config() {
  mkdir -p "$KAFKA_DIR/data" "$KAFKA_DIR/logs"
  cat > "$KAFKA_DIR/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$KAFKA_HOST:$CONTROLLER_PORT
listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$KAFKA_DIR/data
num.partitions=3
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=168
PROPS
}

kafka_answers() { kafka_java org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_HOST:$KAFKA_PORT" --list; }

kafka_up() {
  if pid_alive "$KAFKA_DIR/kafka.pid"; then log "kafka already running (pid $(cat "$KAFKA_DIR/kafka.pid"))"; return; fi
  fetch_kafka
  kafka_config
  if [ ! -f "$KAFKA_DIR/data/meta.properties" ]; then
    log "formatting kafka storage"
    kafka_java kafka.tools.StorageTool format -t "$(kafka_java kafka.tools.StorageTool random-uuid)" \
      -c "$KAFKA_DIR/server.properties" >"$KAFKA_DIR/logs/format.log" 2>&1 \
      || die "formatting kafka storage failed; read $KAFKA_DIR/logs/format.log"
  fi
  log "starting kafka on $KAFKA_HOST:$KAFKA_PORT"
  nohup java -Xmx"$KAFKA_HEAP" -Xms"$KAFKA_HEAP" -cp "$KAFKA_LIBS/*" \
    -Dlog4j.configuration="file:$ROOT/scripts/kafka/log4j.properties" -Dkafka.logs.dir="$KAFKA_DIR/logs" \
    kafka.Kafka "$KAFKA_DIR/server.properties" >"$KAFKA_DIR/logs/stdout.log" 2>&1 &
  echo $! > "$KAFKA_DIR/kafka.pid"
  wait_for "kafka" "$KAFKA_DIR/logs/server.log" kafka_answers
  create_topic crm.events.raw 3
  create_topic crm.events.dlq 1
}

create_topic() {
  kafka_java org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_HOST:$KAFKA_PORT" \
    --create --if-not-exists --topic "$1" --partitions "$2" --replication-factor 1 >/dev/null
}

# --- PostgreSQL ----------------------------------------------------------------------
# initdb and postgres refuse to run as root, so as root the cluster belongs to the
# 'postgres' user. Its data must then sit where that user can reach it.
as_pg() { if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi; }

# Where the cluster really lives. As root the server runs as 'postgres', which must reach
# this folder by its real path: a symlink inside a checkout it cannot enter (a clone under
# /root, mode 700) does not help, because the kernel checks every folder on the way.
pg_home() {
  if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$DEV"; then
    printf '/var/tmp/eventline-pg-%s' "$(printf '%s' "$ROOT" | md5sum | cut -c1-12)"
  else
    printf '%s' "$PG_DIR"
  fi
}

# Creates the cluster's folder; outside the checkout, .dev/pg links to it so that people
# find the data and the log where they expect them. Prints the real path.
pg_data_dir() {
  local home; home="$(pg_home)"
  mkdir -p "$home"
  [ "$(id -u)" = 0 ] && chown postgres: "$home"
  if [ "$home" != "$PG_DIR" ] && [ "$(readlink "$PG_DIR" 2>/dev/null)" != "$home" ]; then
    rm -rf "$PG_DIR"; ln -s "$home" "$PG_DIR"
  fi
  printf '%s' "$home"
}

pg_answers() { "$PG_BIN/pg_isready" -h "$PG_HOST" -p "$PG_PORT" -q; }

pg_up() {
  local dir; dir="$(pg_data_dir)"
  if pid_alive "$DEV/postgres.pid" && pg_answers; then log "postgres already running on port $PG_PORT"; return; fi
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    log "creating a throwaway postgres cluster in $dir/data"
    as_pg "$PG_BIN/initdb" -D "$dir/data" -U "$PG_USER" --auth=trust -E UTF8 --locale=C.UTF-8 >"$DEV/initdb.log" 2>&1 \
      || die "initdb failed; read $DEV/initdb.log"
  fi
  log "starting postgres on $PG_HOST:$PG_PORT"
  as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t "$START_TIMEOUT" start \
    -o "-p $PG_PORT -c listen_addresses=$PG_HOST -k $dir -c fsync=on -c max_connections=200 -c shared_buffers=256MB" >/dev/null \
    || die "postgres did not start; read $dir/postgres.log"
  head -1 "$dir/data/postmaster.pid" > "$DEV/postgres.pid"
  wait_for "postgres" "$dir/postgres.log" pg_answers
  if ! psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$PG_DB'" | grep -q 1; then
    psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -qc "CREATE DATABASE \"$PG_DB\"" >/dev/null
  fi
}

pg_down() {
  local home; home="$(pg_home)"
  [ -e "$home/data/PG_VERSION" ] || return 0
  if pid_alive "$DEV/postgres.pid"; then
    log "stopping postgres"
    as_pg "$PG_BIN/pg_ctl" -D "$home/data" -m fast -w stop >/dev/null || true
  fi
  rm -f "$DEV/postgres.pid"
}

kafka_down() {
  if pid_alive "$KAFKA_DIR/kafka.pid"; then
    local pid; pid="$(cat "$KAFKA_DIR/kafka.pid")"
    log "stopping kafka (pid $pid)"
    kill "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$KAFKA_DIR/kafka.pid"
}

status() {
  local rc=0
  if pid_alive "$KAFKA_DIR/kafka.pid"; then echo "kafka     running  pid $(cat "$KAFKA_DIR/kafka.pid")  $KAFKA_HOST:$KAFKA_PORT"; else echo "kafka     stopped"; rc=1; fi
  if pid_alive "$DEV/postgres.pid" && pg_answers; then echo "postgres  running  pid $(cat "$DEV/postgres.pid")  $PG_HOST:$PG_PORT/$PG_DB"; else echo "postgres  stopped"; rc=1; fi
  return $rc
}

read_settings
case "${1:-}" in
  up)     ensure_packages; mkdir -p "$DEV"; pg_up; kafka_up; status ;;
  down)   kafka_down; pg_down ;;
  status) status ;;
  logs)   tail -n "${LINES_TO_SHOW:-40}" "$KAFKA_DIR/logs/server.log" "$PG_DIR/postgres.log" 2>/dev/null || true ;;
  clean)  kafka_down; pg_down; rm -rf "$KAFKA_DIR" "$(pg_home)" "$PG_DIR" "$DEV" ;;
  pg-stop)  pg_down ;;          # used by drills
  pg-start) pg_up ;;
  # topic NAME PARTITIONS [recreate]: create a topic (deleting it first with "recreate")
  topic)
    if [ "${4:-}" = recreate ]; then
      kafka_java org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_HOST:$KAFKA_PORT" --delete --if-exists --topic "$2" >/dev/null 2>&1 || true
      # Deletion is asynchronous: wait until the name is free again.
      for _ in $(seq 1 60); do kafka_answers 2>/dev/null | grep -qx "$2" || break; sleep 0.5; done
    fi
    create_topic "$2" "$3" ;;
  # topics-delete REGEX: delete every topic whose name matches (the bench's leftovers)
  topics-delete)
    kafka_java org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_HOST:$KAFKA_PORT" --delete --if-exists --topic "$2" >/dev/null 2>&1 || true ;;
  psql) shift; psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" "$@" ;;
  *) echo "usage: $0 up|down|status|logs|clean|topic NAME PARTITIONS [recreate]|topics-delete REGEX|psql ARGS" >&2; exit 2 ;;
esac
