# Shell functions shared by scripts/load.sh and scripts/logins.sh: a throwaway PostgreSQL server,
# sluice and PgBouncer in front of it, all on 127.0.0.1, all stopped and removed on exit.
#
# Source it from the repository root after `set -euo pipefail`, with REPO set, then call
# `lib_traps` once. The caller sets WORK (a temporary directory) before starting anything.
#
# Knobs (environment), besides each caller's own:
#   PG_BINDIR=/usr/lib/postgresql/15/bin
#   POOL_SIZE=16                server connections per pool, sluice and PgBouncer alike
#   SYNC_COMMIT=off             synchronous_commit of the server
#   PG_MAX_CONNECTIONS=200      the server's max_connections
#   PGB_MAX_CLIENT_CONN=1000    PgBouncer's max_client_conn (MAX_CLIENTS: the same for both)
#   PGB_EXTRA=                  more lines for PgBouncer's [pgbouncer] section
#   BUILD_TIMEOUT=1800 BUILD_ATTEMPTS=1 (more: retry a failed build a minute later)
#   KEEP=0 (1 keeps the temporary directory for inspection)
#   NO_BUILD=0 (1: no cargo build, use the release artifacts in the target dir as they are)
#   SLUICE_BIN=                 measure this sluice binary instead of the one just built (A/B runs)
#   SLUICE_LAYOUT= SLUICE_WORKERS=  sluice's [runtime] layout ("shared" | "per-core") and workers
#                               (empty: the config default)
#   SLUICE_POOL_EXTRA=          more lines for sluice's [pool] section
# shellcheck shell=bash

PG_BINDIR=${PG_BINDIR:-/usr/lib/postgresql/15/bin}
POOL_SIZE=${POOL_SIZE:-16}
SYNC_COMMIT=${SYNC_COMMIT:-off}
PG_MAX_CONNECTIONS=${PG_MAX_CONNECTIONS:-200}
PGB_MAX_CLIENT_CONN=${PGB_MAX_CLIENT_CONN:-1000}
PGB_EXTRA=${PGB_EXTRA:-}
BUILD_TIMEOUT=${BUILD_TIMEOUT:-1800}
BUILD_ATTEMPTS=${BUILD_ATTEMPTS:-1}
KEEP=${KEEP:-0}
NO_BUILD=${NO_BUILD:-0}
SLUICE_LAYOUT=${SLUICE_LAYOUT:-}
SLUICE_WORKERS=${SLUICE_WORKERS:-}
SLUICE_POOL_EXTRA=${SLUICE_POOL_EXTRA:-}
LOG_TAG=${LOG_TAG:-lib}

BENCH_USER=bench
BENCH_DB=bench
BENCH_PASSWORD=bench-load-secret
# A second role that logs in without a password (trust) on every hop, for login-cost runs.
TRUST_USER=bench_trust
# sluice's client connection limit, PgBouncer's max_client_conn likewise (idle-footprint runs).
MAX_CLIENTS=${MAX_CLIENTS:-$PGB_MAX_CLIENT_CONN}

# libpq variables that would silently send our commands elsewhere.
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGPASSWORD PGSERVICE PGOPTIONS PGDATA PGSSLMODE

log() { printf '[%s %s] %s\n' "$LOG_TAG" "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  log "FATAL: $*"
  exit 1
}
is_root() { [ "$(id -u)" = 0 ]; }

# as_pg SECONDS CMD...: server binaries run as `postgres` when we are root (initdb and pgbouncer
# refuse root), in a directory that user can enter, killed after SECONDS.
as_pg() {
  local secs=$1
  shift
  if is_root; then
    (cd "${WORK:-/}" && timeout "$secs" runuser -u postgres -- "$@")
  else
    (cd "${WORK:-/}" && timeout "$secs" "$@")
  fi
}

# ---------------------------------------------------------------- cleanup

WORK=""
SLUICE_PIDS=()
PGB_PID=""
DATADIRS=()
# Other processes of ours to stop on exit (load generators...).
EXTRA_PIDS=()

stop_pid() {
  local pid=$1 i
  kill "$pid" 2>/dev/null || return 0
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$? pid d
  set +e
  trap - EXIT INT TERM
  log "cleaning up"
  for pid in "${EXTRA_PIDS[@]}" "${SLUICE_PIDS[@]}"; do stop_pid "$pid"; done
  if [ -n "$WORK" ] && [ -s "$WORK/pgbouncer.pid" ]; then stop_pid "$(cat "$WORK/pgbouncer.pid")"; fi
  [ -n "$PGB_PID" ] && stop_pid "$PGB_PID"
  for d in "${DATADIRS[@]}"; do
    [ -f "$d/postmaster.pid" ] && as_pg 60 "$PG_BINDIR/pg_ctl" -D "$d" -m immediate -w -t 30 stop >/dev/null 2>&1
  done
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then
    if [ "$KEEP" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
  fi
  exit "$rc"
}

lib_traps() {
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# make_work NAME: a fresh temporary directory in WORK that the server's user can enter.
make_work() {
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
  chmod 755 "$WORK"
  if is_root; then chown postgres "$WORK"; fi
}

# ---------------------------------------------------------------- helpers

# Sets PICKED to a port below 32768 that nothing listens on and we have not handed out.
USED_PORTS=" "
pick_port() {
  local p i
  for i in $(seq 1 500); do
    p=$((20000 + RANDOM % 12000))
    case "$USED_PORTS" in *" $p "*) continue ;; esac
    if ! timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$p" 2>/dev/null; then
      USED_PORTS="$USED_PORTS$p "
      PICKED=$p
      return 0
    fi
  done
  die "no free port found"
}

# psql as the superuser over the server's Unix socket (trust), for setup only.
psql_admin() {
  local port=$1
  shift
  timeout 120 "$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$WORK" -p "$port" -U postgres -d postgres "$@"
}

# psql as the bench user over TCP (SCRAM), to any target.
psql_bench() {
  local port=$1
  shift
  PGPASSWORD=$BENCH_PASSWORD PGCONNECT_TIMEOUT=5 timeout 30 \
    "$PG_BINDIR/psql" -X -q -At -h 127.0.0.1 -p "$port" -U "$BENCH_USER" -d "$BENCH_DB" "$@"
}

# Wait (bounded) until `SELECT 1` works on `port`; `pid` must stay alive meanwhile.
wait_ready() {
  local name=$1 port=$2 pid=$3 logfile=$4 i
  for i in $(seq 1 60); do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$logfile" >&2
      die "$name exited during startup"
    fi
    [ "$(psql_bench "$port" -c 'SELECT 1' 2>/dev/null)" = 1 ] && return 0
    sleep 0.5
  done
  tail -n 30 "$logfile" >&2
  die "$name did not accept a login on port $port within 30s"
}

# ---------------------------------------------------------------- setup steps

# check_prerequisites BINARY...: these must be in PG_BINDIR.
check_prerequisites() {
  local b
  for b in "$@"; do
    [ -x "$PG_BINDIR/$b" ] || die "$PG_BINDIR/$b is missing (apt-get install postgresql-15, or set PG_BINDIR)"
  done
  if is_root && ! id postgres >/dev/null 2>&1; then die "running as root needs a 'postgres' OS user"; fi
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
}

# build_release ARTIFACT...: `cargo build --release` of each `bin:NAME` / `example:NAME`, then a
# private copy of each in WORK: a rebuild by someone else mid-run must not change what is measured.
build_release() {
  local args=() a n target=${CARGO_TARGET_DIR:-$REPO/target}
  for a in "$@"; do
    case "$a" in
      bin:*) args+=(--bin "${a#bin:}") ;;
      example:*) args+=(--example "${a#example:}") ;;
      *) die "build_release: unknown artifact $a" ;;
    esac
  done
  [ "$NO_BUILD" = 1 ] && log "NO_BUILD=1: using the release artifacts already built"
  for n in $(seq 1 "$BUILD_ATTEMPTS"); do
    [ "$NO_BUILD" = 1 ] && break
    log "building (cargo build --release ${args[*]}; the target dir is shared, this may wait)"
    timeout "$BUILD_TIMEOUT" cargo build --release "${args[@]}" >"$WORK/build.log" 2>&1 && break
    tail -n 40 "$WORK/build.log" >&2
    [ "$n" -lt "$BUILD_ATTEMPTS" ] || die "cargo build --release failed"
    log "build failed (attempt $n of $BUILD_ATTEMPTS); retrying in 60s"
    sleep 60
  done
  for a in "$@"; do
    case "$a" in
      bin:sluice) cp "${SLUICE_BIN:-$target/release/sluice}" "$WORK/sluice" ;;
      bin:*) cp "$target/release/${a#bin:}" "$WORK/" ;;
      example:*) cp "$target/release/examples/${a#example:}" "$WORK/" ;;
    esac
  done
}

install_pgbouncer() {
  if command -v pgbouncer >/dev/null; then return 0; fi
  if ! is_root || ! command -v apt-get >/dev/null; then
    log "pgbouncer is missing and cannot be installed here (needs root + apt): skipping it"
    return 0
  fi
  log "installing pgbouncer with apt"
  if ! DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq pgbouncer >"$WORK/apt.log" 2>&1; then
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get update -qq >>"$WORK/apt.log" 2>&1 || true
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq pgbouncer >>"$WORK/apt.log" 2>&1 ||
      { tail -n 20 "$WORK/apt.log" >&2; log "apt-get install pgbouncer failed: skipping it"; }
  fi
}

# init_primary DIR PORT: initdb, configure, start.
init_primary() {
  local dir=$1 port=$2
  log "initdb $dir (port $port)"
  as_pg 300 "$PG_BINDIR/initdb" -D "$dir" -U postgres -N --locale=C -E UTF8 \
    --auth-local=trust --auth-host=scram-sha-256 >"$WORK/initdb.log" 2>&1 ||
    { tail -n 20 "$WORK/initdb.log" >&2; die "initdb failed"; }
  as_pg 30 tee -a "$dir/postgresql.conf" >/dev/null <<EOF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK'
max_connections = $PG_MAX_CONNECTIONS
shared_buffers = 256MB
password_encryption = 'scram-sha-256'
synchronous_commit = $SYNC_COMMIT
wal_level = replica
max_wal_senders = 10
hot_standby = on
EOF
  # The trust role first: pg_hba.conf is matched top-down.
  as_pg 30 sed -i "1i host all $TRUST_USER 127.0.0.1/32 trust" "$dir/pg_hba.conf"
  start_server "$dir" "$port"
}

# start_server DIR PORT: the port is set last so replicas cloned from the primary get their own.
start_server() {
  local dir=$1 port=$2
  echo "port = $port" | as_pg 30 tee -a "$dir/postgresql.conf" >/dev/null
  DATADIRS+=("$dir")
  as_pg 120 "$PG_BINDIR/pg_ctl" -D "$dir" -l "$dir.log" -w -t 90 start >/dev/null ||
    { tail -n 20 "$dir.log" >&2; die "cannot start the server in $dir"; }
}

# create_bench_user PORT: the bench role and database; sets VERIFIER (its SCRAM verifier).
create_bench_user() {
  local port=$1
  psql_admin "$port" <<EOF
SET password_encryption = 'scram-sha-256';
CREATE ROLE $BENCH_USER LOGIN PASSWORD '$BENCH_PASSWORD';
CREATE DATABASE $BENCH_DB OWNER $BENCH_USER;
CREATE ROLE $TRUST_USER LOGIN;
EOF
  VERIFIER=$(psql_admin "$port" -At -c "SELECT rolpassword FROM pg_authid WHERE rolname = '$BENCH_USER'")
  case "$VERIFIER" in SCRAM-SHA-256\$*) ;; *) die "unexpected verifier for $BENCH_USER: $VERIFIER" ;; esac
}

# setup_primary SCALE: a primary with the bench roles and `pgbench -i -s SCALE`; sets PRIMARY_PORT.
setup_primary() {
  pick_port
  PRIMARY_PORT=$PICKED
  init_primary "$WORK/primary" "$PRIMARY_PORT"
  create_bench_user "$PRIMARY_PORT"
  log "pgbench -i -s $1"
  PGPASSWORD=$BENCH_PASSWORD timeout 900 "$PG_BINDIR/pgbench" -i -q -s "$1" -h 127.0.0.1 \
    -p "$PRIMARY_PORT" -U "$BENCH_USER" "$BENCH_DB" >"$WORK/init.log" 2>&1 ||
    { tail -n 20 "$WORK/init.log" >&2; die "pgbench -i failed"; }
  psql_admin "$PRIMARY_PORT" -c CHECKPOINT
}

# write_sluice_config FILE LISTEN_PORT NODE_PORT...
write_sluice_config() {
  local file=$1 listen=$2 i=0 port
  shift 2
  {
    echo "listen = \"127.0.0.1:$listen\""
    printf '\n[limits]\nmax_client_connections = %s\n' "$MAX_CLIENTS"
    printf '\n[pool]\nmode = "transaction"\nsize = %s\n' "$POOL_SIZE"
    [ -z "$SLUICE_POOL_EXTRA" ] || printf '%s\n' "$SLUICE_POOL_EXTRA"
    if [ -n "$SLUICE_LAYOUT$SLUICE_WORKERS" ]; then
      printf '\n[runtime]\n'
      [ -z "$SLUICE_LAYOUT" ] || printf 'layout = "%s"\n' "$SLUICE_LAYOUT"
      [ -z "$SLUICE_WORKERS" ] || printf 'workers = %s\n' "$SLUICE_WORKERS"
    fi
    printf '\n[monitor]\nuser = "%s"\ndatabase = "postgres"\ninterval = "1s"\n' "$BENCH_USER"
    for port in "$@"; do
      i=$((i + 1))
      printf '\n[[nodes]]\nname = "pg%s"\nhost = "127.0.0.1"\nport = %s\n' "$i" "$port"
    done
    # The server's own verifier, as PgBouncer gets it; sluice answers the servers with the password.
    printf '\n[[users]]\nname = "%s"\npassword = "%s"\nserver_password = "%s"\nauth = "scram-sha-256"\n' \
      "$BENCH_USER" "$VERIFIER" "$BENCH_PASSWORD"
    printf '\n[[users]]\nname = "%s"\nauth = "trust"\n' "$TRUST_USER"
  } >"$file"
  "$WORK/sluice" check-config "$file" >&2 || die "sluice rejected $file"
}

# start_sluice CONFIG PORT LOG [BINARY]: sets SLUICE_PID (BINARY: the one built, by default).
start_sluice() {
  local config=$1 port=$2 logfile=$3 binary=${4:-$WORK/sluice}
  SLUICE_LOG=${SLUICE_LOG:-warn} "$binary" run --config "$config" >"$logfile" 2>&1 &
  SLUICE_PID=$!
  SLUICE_PIDS+=("$SLUICE_PID")
  wait_ready sluice "$port" "$SLUICE_PID" "$logfile"
  log "sluice (pid $SLUICE_PID) is up on 127.0.0.1:$port"
}

# start_pgbouncer PORT SERVER_PORT: transaction pooling, SCRAM against the server's verifier for
# the bench user, trust for the trust user (as sluice and the server are configured).
start_pgbouncer() {
  local port=$1 pg_port=$2
  printf '"%s" "%s"\n"%s" ""\n' "$BENCH_USER" "$VERIFIER" "$TRUST_USER" >"$WORK/userlist.txt"
  printf 'host all %s 127.0.0.1/32 trust\nhost all %s 127.0.0.1/32 scram-sha-256\n' \
    "$TRUST_USER" "$BENCH_USER" >"$WORK/pgbouncer_hba.conf"
  cat >"$WORK/pgbouncer.ini" <<EOF
[databases]
$BENCH_DB = host=127.0.0.1 port=$pg_port dbname=$BENCH_DB

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = hba
auth_hba_file = $WORK/pgbouncer_hba.conf
auth_file = $WORK/userlist.txt
pool_mode = transaction
default_pool_size = $POOL_SIZE
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = $MAX_CLIENTS
logfile = $WORK/pgbouncer.log
pidfile = $WORK/pgbouncer.pid
log_connections = 0
log_disconnections = 0
ignore_startup_parameters = extra_float_digits
$PGB_EXTRA
EOF
  if is_root; then chown postgres "$WORK/userlist.txt" "$WORK/pgbouncer.ini" "$WORK/pgbouncer_hba.conf"; fi
  # runuser starts with the default soft open-files limit (1024): raise it for PgBouncer again.
  as_pg 86400 bash -c 'ulimit -n "$(ulimit -Hn)" && exec pgbouncer "$1"' pgbouncer "$WORK/pgbouncer.ini" \
    >"$WORK/pgbouncer.out" 2>&1 &
  PGB_PID=$!
  wait_ready pgbouncer "$port" "$PGB_PID" "$WORK/pgbouncer.out"
  log "pgbouncer $(pgbouncer_version) is up on 127.0.0.1:$port"
}

# The installed PgBouncer's version, or "not installed" (reports name it either way).
pgbouncer_version() {
  local v
  v=$(pgbouncer --version 2>/dev/null | head -n 1 | awk '{print $2}') || true
  echo "${v:-not installed}"
}

# The commit under test, `+dirty` when src/ differs from it.
sluice_version() {
  echo "$(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet HEAD -- src 2>/dev/null || echo '+dirty')"
}
