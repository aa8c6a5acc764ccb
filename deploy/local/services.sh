#!/usr/bin/env bash
# Start or stop real Redis and Apache Kafka (KRaft, combined mode) on loopback, without Docker.
# Used by `./dev test` and for local distributed runs. Writes .cache/services.env with the addresses.
#   deploy/local/services.sh start | stop | status | restart-kafka
# restart-kafka stops the broker (SIGTERM, then SIGKILL after 10 s) and starts it again on the same
# data dir (what a broker restart in production looks like; the fault tests use it).
# CLASSPULSE_LOCAL_RUN_DIR: folder for pid files, logs and Kafka data (default .cache/run); with it set,
# the env file is written there too (the fault tests start a private pair this way). Pid files:
# $run/redis.pid (redis-server) and $run/kafka.pid (the broker JVM).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cache="$root/.cache"
run="${CLASSPULSE_LOCAL_RUN_DIR:-$cache/run}"
env_file="$cache/services.env"
[ -n "${CLASSPULSE_LOCAL_RUN_DIR:-}" ] && env_file="$run/services.env"
redis_port=${CLASSPULSE_LOCAL_REDIS_PORT:-6390}
kafka_port=${CLASSPULSE_LOCAL_KAFKA_PORT:-19092}
ctrl_port=$((kafka_port + 1))
libs="$cache/kafka-libs"
mkdir -p "$run"

kafka_jars() {
  if [ ! -f "$libs/.complete" ]; then
    echo "fetching Kafka broker jars with Maven (cached in ~/.m2)..." >&2
    rm -rf "$libs"
    mvn -B -q -f "$root/deploy/kafka/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$libs" >&2
    touch "$libs/.complete"
  fi
}

start_redis() {
  if redis-cli -p "$redis_port" ping >/dev/null 2>&1; then return; fi
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize yes --pidfile "$run/redis.pid" --logfile "$run/redis.log"
  for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && return; sleep 0.1; done
  echo "redis did not start; see $run/redis.log" >&2; exit 1
}

start_kafka() {  # $1 = keep: start on the existing data dir (a restart)
  if [ -f "$run/kafka.pid" ] && kill -0 "$(cat "$run/kafka.pid")" 2>/dev/null; then return; fi
  kafka_jars
  local data="$run/kafka-data" props="$run/server.properties" t0
  t0=$(date +%s.%N)
  if [ "${1:-}" != keep ]; then rm -rf "$data"; fi
  mkdir -p "$data"
  cat >"$props" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$ctrl_port
listeners=PLAINTEXT://127.0.0.1:$kafka_port,CONTROLLER://127.0.0.1:$ctrl_port
advertised.listeners=PLAINTEXT://127.0.0.1:$kafka_port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$data
num.partitions=3
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
PROPS
  cat >"$run/log4j2.properties" <<'LOG'
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
LOG
  local java=(java -Xms256m -Xmx768m -Dkafka.logs.dir="$run" -Dlog4j2.configurationFile="$run/log4j2.properties" -cp "$libs/*")
  "${java[@]}" kafka.tools.StorageTool format -t classpulse-local-cluster -c "$props" --ignore-formatted >"$run/kafka-format.log" 2>&1
  if [ "${1:-}" = keep ]; then cat "$run/server.log" >>"$run/server.log.old" 2>/dev/null || true; fi
  : >"$run/server.log"
  nohup "${java[@]}" kafka.Kafka "$props" >"$run/kafka.out" 2>&1 &
  echo $! >"$run/kafka.pid"
  for _ in $(seq 600); do
    if grep -q "Kafka Server started" "$run/server.log" 2>/dev/null; then
      echo "kafka ready in $(echo "$(date +%s.%N) - $t0" | bc) s" >&2
      return
    fi
    kill -0 "$(cat "$run/kafka.pid")" 2>/dev/null || { echo "kafka exited; see $run/kafka.out and $run/server.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "kafka did not start within 60 s; see $run/server.log" >&2; exit 1
}

stop_kafka() {
  if [ -f "$run/kafka.pid" ]; then
    local pid
    pid=$(cat "$run/kafka.pid"); kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true; rm -f "$run/kafka.pid"
  fi
}

case "${1:-}" in
  start)
    start_redis
    start_kafka
    cat >"$env_file" <<ENV
export CLASSPULSE_TEST_REDIS_URL=redis://127.0.0.1:$redis_port/0
export CLASSPULSE_TEST_KAFKA_BOOTSTRAP=127.0.0.1:$kafka_port
ENV
    echo "redis on 127.0.0.1:$redis_port, kafka on 127.0.0.1:$kafka_port" >&2
    ;;
  stop)
    redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
    stop_kafka
    ;;
  restart-kafka)
    stop_kafka
    start_kafka keep
    ;;
  status)
    redis-cli -p "$redis_port" ping || true
    [ -f "$run/kafka.pid" ] && kill -0 "$(cat "$run/kafka.pid")" && echo "kafka running" || echo "kafka stopped"
    ;;
  *) echo "usage: $0 start|stop|status|restart-kafka" >&2; exit 2 ;;
esac
