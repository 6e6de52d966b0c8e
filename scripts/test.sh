#!/usr/bin/env bash
# Runs every test: unit tests, property tests and integration tests against real PostgreSQL.
# Installs what the tests need when it can (as root, via apt), or says exactly how.
set -euo pipefail
cd "$(dirname "$0")/.."

pg_bindir() {
  for d in "$(pg_config --bindir 2>/dev/null || true)" /usr/lib/postgresql/*/bin; do
    [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/pg_basebackup" ] && { echo "$d"; return 0; }
  done
  return 1
}

if ! pg_bindir >/dev/null || ! command -v psql >/dev/null || ! command -v pgbench >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test.sh: installing PostgreSQL server binaries (postgresql, postgresql-contrib)..."
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-contrib >/dev/null
  else
    echo "test.sh: the tests need PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup) and psql/pgbench." >&2
    echo "         On Debian/Ubuntu: sudo apt-get install postgresql postgresql-contrib" >&2
    exit 2
  fi
fi

# The TLS tests make a throwaway CA and certificates with the openssl command line.
if ! command -v openssl >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test.sh: installing openssl (the TLS tests make their certificates with it)..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null; }
  else
    echo "test.sh: the TLS tests need the openssl command line (Debian/Ubuntu: sudo apt-get install openssl)" >&2
    exit 2
  fi
fi

# Tests that hold thousands of sockets need the open-files soft limit raised to the hard one.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

exec cargo test --all-targets "$@"
