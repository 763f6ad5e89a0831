#!/usr/bin/env bash
# Throwaway PostgreSQL and Redis servers for the scale-out tests (sourced by .ci/run).
#   source .ci/services.sh && start_postgres && start_redis
# start_postgres exports WAN_PIPELINE_TEST_DATABASE_URL (a postgresql:// URL whose server lets the
# tests create one database per test); start_redis exports WAN_PIPELINE_TEST_BROKER_URL. Both
# servers live in a temporary folder and stop when the shell exits (stop_services).
# Debian's packages are installed where missing and we may (root). PostgreSQL refuses to run as
# root, so the cluster belongs to the `postgres` user that Debian's package creates.

SERVICES_DIR=""

_as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

_apt() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq >/dev/null && apt-get install -y -qq "$@" >/dev/null; } || return 1
  else
    return 1
  fi
}

_pg_bin() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

start_postgres() {
  local bin port
  bin=$(_pg_bin) || true
  if [ -z "$bin" ]; then
    echo "installing postgresql for the scale-out tests (apt-get)…"
    _apt postgresql || { echo "postgresql could not be installed: the PostgreSQL tests will skip"; return 0; }
    bin=$(_pg_bin)
  fi
  SERVICES_DIR=${SERVICES_DIR:-$(mktemp -d /tmp/wan-ci-services.XXXXXX)}
  chmod 755 "$SERVICES_DIR"
  mkdir -p "$SERVICES_DIR/pg"
  [ "$(id -u)" = 0 ] && chown postgres "$SERVICES_DIR/pg"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  _as_pg "$bin/initdb" -D "$SERVICES_DIR/pg/data" -U postgres --auth=trust -E UTF8 >/dev/null
  _as_pg "$bin/pg_ctl" -D "$SERVICES_DIR/pg/data" -l "$SERVICES_DIR/pg/log" -w \
    -o "-p $port -k $SERVICES_DIR/pg -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null
  export WAN_PIPELINE_TEST_DATABASE_URL="postgresql://postgres@127.0.0.1:$port/postgres"
  echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (throwaway cluster in $SERVICES_DIR/pg)"
}

start_redis() {
  local port
  if ! command -v redis-server >/dev/null; then
    echo "installing redis-server for the Celery test (apt-get)…"
    _apt redis-server || { echo "redis-server could not be installed: the Celery test will skip"; return 0; }
  fi
  SERVICES_DIR=${SERVICES_DIR:-$(mktemp -d /tmp/wan-ci-services.XXXXXX)}
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
    --pidfile "$SERVICES_DIR/redis.pid" --logfile "$SERVICES_DIR/redis.log"
  export WAN_PIPELINE_TEST_BROKER_URL="redis://127.0.0.1:$port/0"
  echo "Redis on 127.0.0.1:$port"
}

stop_services() {
  [ -n "$SERVICES_DIR" ] || return 0
  if [ -d "$SERVICES_DIR/pg/data" ]; then
    _as_pg "$(_pg_bin)/pg_ctl" -D "$SERVICES_DIR/pg/data" -m immediate stop >/dev/null 2>&1 || true
  fi
  if [ -f "$SERVICES_DIR/redis.pid" ]; then kill "$(cat "$SERVICES_DIR/redis.pid")" 2>/dev/null || true; fi
  rm -rf "$SERVICES_DIR"
}
