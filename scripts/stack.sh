#!/usr/bin/env bash
# Local stack without Docker: one Apache Kafka node in KRaft mode (official jars from
# Maven Central) and a throwaway PostgreSQL 15 cluster, both on 127.0.0.1.
#
#   scripts/stack.sh up|down|status|logs|clean|env
#
# Everything lives under .dev/ (data, logs, pid files) and .cache/ (jars); both are
# git-ignored. `up` is idempotent; `down` stops only what this script started.
#
# Besides its PLAINTEXT port, the broker has a second listener on the port + 2, SASL_SSL
# with SCRAM-SHA-512, and Postgres accepts TLS: both use a certificate from a CA this
# script generates under .dev/tls/ (ca.crt is what clients trust). The SCRAM user is
# `eventline`, its password in .dev/tls/kafka-password. Nothing secret is in the repo.
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
  SECURE_PORT=$((KAFKA_PORT + 2))
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
  command -v openssl >/dev/null || missing+=(openssl)
  command -v curl >/dev/null || missing+=(curl)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# --- TLS material: a CA and one server certificate, for the broker and for Postgres ---
TLS_DIR="$DEV/tls"
KAFKA_USER="eventline"

tls_material() {
  [ -f "$TLS_DIR/server.p12" ] && [ -f "$TLS_DIR/kafka-password" ] && return
  log "generating a CA and a server certificate for $KAFKA_HOST under $TLS_DIR"
  mkdir -p "$TLS_DIR" && chmod 700 "$TLS_DIR"
  local san="IP:127.0.0.1,DNS:localhost"
  [ "$KAFKA_HOST" != 127.0.0.1 ] && [ "$KAFKA_HOST" != localhost ] && san="$san,DNS:$KAFKA_HOST"
  (
    cd "$TLS_DIR"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=eventline local CA" \
      -keyout ca.key -out ca.crt 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
    printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' "$san" > server.ext
    openssl x509 -req -days 3650 -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -extfile server.ext -out server.crt 2>/dev/null
    # The broker's keystore; its password only guards a file in a mode-700 folder.
    openssl rand -hex 16 > keystore-password
    openssl pkcs12 -export -in server.crt -inkey server.key -name broker \
      -passout "file:keystore-password" -out server.p12
    openssl rand -hex 16 > kafka-password
    chmod 600 ./*
    chmod 644 ca.crt
  ) || die "generating TLS material failed (openssl)"
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

# Writes the broker's configuration to $1.
kafka_config() {
  mkdir -p "$KAFKA_DIR/data" "$KAFKA_DIR/logs"
  cat > "$1" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$KAFKA_HOST:$CONTROLLER_PORT
listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$CONTROLLER_PORT,SASL_SSL://$KAFKA_HOST:$SECURE_PORT
advertised.listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,SASL_SSL://$KAFKA_HOST:$SECURE_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
inter.broker.listener.name=PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PKCS12
listener.name.sasl_ssl.ssl.keystore.location=$TLS_DIR/server.p12
listener.name.sasl_ssl.ssl.keystore.password=$(cat "$TLS_DIR/keystore-password")
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
  tls_material
  kafka_config "$KAFKA_DIR/server.properties.wanted"
  if pid_alive "$KAFKA_DIR/kafka.pid"; then
    if cmp -s "$KAFKA_DIR/server.properties.wanted" "$KAFKA_DIR/server.properties"; then
      log "kafka already running (pid $(cat "$KAFKA_DIR/kafka.pid"))"; scram_user; return
    fi
    # A broker started by an older version of this script lacks the secured listener.
    log "kafka's configuration changed: restarting it"
    kafka_down
  fi
  fetch_kafka
  mv "$KAFKA_DIR/server.properties.wanted" "$KAFKA_DIR/server.properties"
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
  scram_user
}

# The SCRAM credential lives in the cluster's metadata, so it survives restarts; the
# marker records which password it was made with.
scram_user() {
  local marker="$KAFKA_DIR/scram-user"
  [ "$(cat "$marker" 2>/dev/null)" = "$(md5sum < "$TLS_DIR/kafka-password")" ] && return
  log "creating the SCRAM-SHA-512 user '$KAFKA_USER' (password in $TLS_DIR/kafka-password)"
  kafka_java kafka.admin.ConfigCommand --bootstrap-server "$KAFKA_HOST:$KAFKA_PORT" --alter \
    --add-config "SCRAM-SHA-512=[password=$(cat "$TLS_DIR/kafka-password")]" \
    --entity-type users --entity-name "$KAFKA_USER" >"$KAFKA_DIR/logs/scram.log" 2>&1 \
    || die "creating the SCRAM user failed; read $KAFKA_DIR/logs/scram.log"
  md5sum < "$TLS_DIR/kafka-password" > "$marker"
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

# The server's copy of the certificate and key: its key must belong to the server's user.
pg_tls() {
  local dir="$1"
  mkdir -p "$dir/tls"
  cp "$TLS_DIR/server.crt" "$TLS_DIR/server.key" "$dir/tls/"
  chmod 600 "$dir/tls/server.key"
  [ "$(id -u)" = 0 ] && chown -R postgres: "$dir/tls"
  return 0
}

pg_ssl_on() { [ "$(psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -tAc 'SHOW ssl' 2>/dev/null)" = on ]; }

pg_up() {
  local dir; dir="$(pg_data_dir)"
  tls_material
  if pid_alive "$DEV/postgres.pid" && pg_answers; then
    if pg_ssl_on; then log "postgres already running on port $PG_PORT"; return; fi
    # A cluster started by an older version of this script has no TLS.
    log "postgres runs without TLS: restarting it"
    pg_down
  fi
  pg_tls "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    log "creating a throwaway postgres cluster in $dir/data"
    as_pg "$PG_BIN/initdb" -D "$dir/data" -U "$PG_USER" --auth=trust -E UTF8 --locale=C.UTF-8 >"$DEV/initdb.log" 2>&1 \
      || die "initdb failed; read $DEV/initdb.log"
  fi
  log "starting postgres on $PG_HOST:$PG_PORT"
  as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t "$START_TIMEOUT" start \
    -o "-p $PG_PORT -c listen_addresses=$PG_HOST -k $dir -c fsync=on -c max_connections=200 -c shared_buffers=256MB -c ssl=on -c ssl_cert_file=$dir/tls/server.crt -c ssl_key_file=$dir/tls/server.key" >/dev/null \
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

# --- S3: moto's server (PyPI), on request (`up-s3`), for the lake on object storage ---
# moto honours conditional puts (If-None-Match), which Delta commits on S3 rely on. Its
# objects live in memory: a restart empties every bucket. Credentials are moto's own
# (any key works); the tests and the demo create a bucket each with `s3-bucket NAME`.
S3_DIR="$DEV/s3"
S3_PORT="${EVENTLINE_S3_PORT:-19100}"
s3_answers() { curl -s -o /dev/null "http://$KAFKA_HOST:$S3_PORT/moto-api/"; }
s3_up() {
  if ! command -v moto_server >/dev/null; then
    # The same pins as scripts/deps.sh: installing moto alone and the rest later
    # changed flask under a running server once, which then answered 500.
    log "installing the Python requirements (moto[server]) with pip"
    python3 -m pip install -q -r "$ROOT/scripts/requirements.txt" \
      || python3 -m pip install -q --break-system-packages -r "$ROOT/scripts/requirements.txt"
  fi
  mkdir -p "$S3_DIR"
  if pid_alive "$S3_DIR/moto.pid" && s3_answers; then return 0; fi
  log "starting the S3 server (moto) on $KAFKA_HOST:$S3_PORT"
  nohup moto_server -H "$KAFKA_HOST" -p "$S3_PORT" >"$S3_DIR/moto.log" 2>&1 &
  echo $! > "$S3_DIR/moto.pid"
  wait_for "the S3 server" "$S3_DIR/moto.log" s3_answers
}
s3_down() {
  if pid_alive "$S3_DIR/moto.pid"; then
    log "stopping the S3 server"
    kill "$(cat "$S3_DIR/moto.pid")" 2>/dev/null || true
  fi
  rm -f "$S3_DIR/moto.pid"
}
# s3-bucket NAME: creates a bucket (a signed request, as any S3 client makes)
s3_bucket() {
  python3 - "$1" "http://$KAFKA_HOST:$S3_PORT" <<'PY'
import sys, boto3
name, endpoint = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="eventline", aws_secret_access_key="eventline")
if name not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
    s3.create_bucket(Bucket=name)
PY
}

status() {
  local rc=0
  if pid_alive "$KAFKA_DIR/kafka.pid"; then echo "kafka     running  pid $(cat "$KAFKA_DIR/kafka.pid")  $KAFKA_HOST:$KAFKA_PORT, SASL_SSL on $KAFKA_HOST:$SECURE_PORT"; else echo "kafka     stopped"; rc=1; fi
  if pid_alive "$DEV/postgres.pid" && pg_answers; then echo "postgres  running  pid $(cat "$DEV/postgres.pid")  $PG_HOST:$PG_PORT/$PG_DB"; else echo "postgres  stopped"; rc=1; fi
  if pid_alive "$S3_DIR/moto.pid"; then echo "s3        running  pid $(cat "$S3_DIR/moto.pid")  http://$KAFKA_HOST:$S3_PORT (moto)"; fi
  return $rc
}

read_settings
case "${1:-}" in
  up)     ensure_packages; mkdir -p "$DEV"; pg_up; kafka_up; status ;;
  # tls-dir: where the CA certificate and the SCRAM password are (for tests and the demo)
  tls-dir) echo "$TLS_DIR" ;;
  # up-s3: the stack plus the S3 server (what `make test` uses)
  up-s3)  ensure_packages; mkdir -p "$DEV"; pg_up; kafka_up; s3_up; status ;;
  s3-bucket) s3_bucket "$2" ;;
  s3-endpoint) echo "http://$KAFKA_HOST:$S3_PORT" ;;
  down)   s3_down; kafka_down; pg_down ;;
  status) status ;;
  logs)   tail -n "${LINES_TO_SHOW:-40}" "$KAFKA_DIR/logs/server.log" "$PG_DIR/postgres.log" 2>/dev/null || true ;;
  clean)  s3_down; kafka_down; pg_down; rm -rf "$KAFKA_DIR" "$(pg_home)" "$PG_DIR" "$DEV" ;;
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
  *) echo "usage: $0 up|up-s3|s3-bucket NAME|s3-endpoint|down|status|logs|clean|topic NAME PARTITIONS [recreate]|topics-delete REGEX|psql ARGS" >&2; exit 2 ;;
esac
