#!/usr/bin/env bash
# Install (Debian) and start a throwaway PostgreSQL server on a unix socket; print its URL.
# Used by CI for the test that runs two sweep workers against one shared study.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  $SUDO apt-get install -y -qq postgresql >/dev/null 2>&1 || {
    $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq postgresql >/dev/null; }
fi
bin=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)")
dir=${CAPQ_PG_DIR:-/tmp/capq-pg}
port=${CAPQ_PG_PORT:-5439}
run() { if [ "$(id -u)" -eq 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi; }
if [ ! -f "$dir/data/PG_VERSION" ]; then
  mkdir -p "$dir"
  [ "$(id -u)" -eq 0 ] && chown postgres "$dir"
  run "$bin/initdb -D $dir/data --auth=trust -U postgres" >/dev/null
fi
run "$bin/pg_ctl -D $dir/data -o '-k $dir -p $port -c listen_addresses=' -l $dir/log -w start" \
  >/dev/null 2>&1 || run "$bin/pg_ctl -D $dir/data status" >/dev/null
run "$bin/psql -h $dir -p $port -U postgres -tAc \"SELECT 1 FROM pg_database WHERE datname='capq_test'\"" \
  | grep -q 1 || run "$bin/createdb -h $dir -p $port -U postgres capq_test"
echo "postgresql://postgres@/capq_test?host=$dir&port=$port"
