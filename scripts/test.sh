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

# The status page is tested in a real headless browser (tests/status_page.rs skips without one).
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test.sh: installing chromium for the status page test..."
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "test.sh: no chromium; tests/status_page.rs will skip (Debian: sudo apt-get install chromium)" >&2
  fi
fi

# The client compatibility suite (tests/compat.rs) drives real drivers: psycopg 3, asyncpg and
# SQLAlchemy (pip), node-postgres (npm, into tests/compat/node_modules), pgjdbc (Debian's
# libpostgresql-jdbc-java, compiled against with the machine's javac). Install what is missing;
# a driver that cannot be installed makes its test say exactly what to install.
install_compat_drivers() {
  if ! python3 -c "import psycopg, asyncpg, sqlalchemy" 2>/dev/null; then
    echo "test.sh: installing psycopg[binary], asyncpg, SQLAlchemy (pip)..."
    python3 -m pip install -q 'psycopg[binary]' asyncpg SQLAlchemy || echo "test.sh: pip install failed" >&2
  fi
  if command -v npm >/dev/null && [ ! -d tests/compat/node_modules/pg ]; then
    echo "test.sh: installing node-postgres (npm, tests/compat/node_modules)..."
    npm install --no-save --no-package-lock --silent --prefix tests/compat pg || echo "test.sh: npm install failed" >&2
  fi
  if { [ ! -f /usr/share/java/postgresql.jar ] || ! command -v javac >/dev/null || ! command -v node >/dev/null; } \
    && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    # Only what is missing: a machine whose node comes from another repository (nodesource's
    # nodejs bundles npm and conflicts with Debian's npm package) must not be asked for both.
    local pkgs=()
    [ -f /usr/share/java/postgresql.jar ] || pkgs+=(libpostgresql-jdbc-java)
    command -v javac >/dev/null || pkgs+=(default-jdk-headless)
    command -v node >/dev/null || pkgs+=(nodejs)
    command -v npm >/dev/null || pkgs+=(npm)
    echo "test.sh: installing ${pkgs[*]} (apt)..."
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null \
      || echo "test.sh: apt-get install ${pkgs[*]} failed" >&2
    if [ ! -d tests/compat/node_modules/pg ] && command -v npm >/dev/null; then
      npm install --no-save --no-package-lock --silent --prefix tests/compat pg || echo "test.sh: npm install failed" >&2
    fi
  fi
}
install_compat_drivers

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
