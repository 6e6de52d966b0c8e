#!/usr/bin/env bash
# Load comparison on this machine, in one run: pgbench directly against PostgreSQL, through sluice
# and through PgBouncer (both in transaction pooling mode with the same pool size, both checking
# clients with SCRAM-SHA-256 against the server's own verifier), plus logins per second.
#
# What it does: builds sluice (release), starts a throwaway PostgreSQL primary in a temporary
# directory (as the `postgres` OS user when run as root), installs PgBouncer with apt when it is
# missing and we are root, runs `pgbench -i` once, then for every test runs the targets back to
# back (interleaved, so drift of a noisy machine hits all of them alike) and prints one table.
# With REPLICAS=1 (default) it then adds two streaming replicas (pg_basebackup -R) and repeats the
# tests through a second sluice that spreads reads over them.
#
# Everything listens on 127.0.0.1 on free ports below 32768 and is stopped and removed on exit,
# failure or Ctrl-C. Every step is bounded by `timeout`.
#
# Knobs (environment):
#   DURATION=15 CLIENTS=16 THREADS=2   each pgbench run (-T/-c/-j)
#   POOL_SIZE=16                       server connections per pool, sluice and PgBouncer alike
#   SCALE=10                           pgbench -i -s
#   LOGIN_DURATION=10 LOGIN_CLIENTS=8  the logins/s runs (pgbench -C, one `SELECT 1` per login)
#   WARMUP=5                           unrecorded -S seconds per target before measuring
#   REPLICAS=1                         0 skips the primary + 2 replicas variant
#   SYNC_COMMIT=off                    synchronous_commit of the server (off keeps TPC-B CPU-bound)
#   PG_BINDIR=/usr/lib/postgresql/15/bin
#   BUILD_TIMEOUT=1800 KEEP=0 (1 keeps the temporary directory for inspection)
#
# The numbers are only comparable within one run: on a small shared machine the load generator,
# the proxy and the servers compete for the same cores.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

DURATION=${DURATION:-15}
CLIENTS=${CLIENTS:-16}
THREADS=${THREADS:-2}
POOL_SIZE=${POOL_SIZE:-16}
SCALE=${SCALE:-10}
LOGIN_DURATION=${LOGIN_DURATION:-10}
LOGIN_CLIENTS=${LOGIN_CLIENTS:-8}
WARMUP=${WARMUP:-5}
REPLICAS=${REPLICAS:-1}
SYNC_COMMIT=${SYNC_COMMIT:-off}
PG_BINDIR=${PG_BINDIR:-/usr/lib/postgresql/15/bin}
BUILD_TIMEOUT=${BUILD_TIMEOUT:-1800}
KEEP=${KEEP:-0}

BENCH_USER=bench
BENCH_DB=bench
BENCH_PASSWORD=bench-load-secret
TESTS=(select-simple select-extended select-prepared tpcb)

# libpq variables that would silently send our commands elsewhere.
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGPASSWORD PGSERVICE PGOPTIONS PGDATA PGSSLMODE

log() { printf '[load %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
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
  local rc=$?
  set +e
  trap - EXIT INT TERM
  log "cleaning up"
  for pid in "${SLUICE_PIDS[@]}"; do stop_pid "$pid"; done
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
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

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

check_prerequisites() {
  for b in initdb pg_ctl pg_basebackup psql pgbench; do
    [ -x "$PG_BINDIR/$b" ] || die "$PG_BINDIR/$b is missing (apt-get install postgresql-15, or set PG_BINDIR)"
  done
  is_root && ! id postgres >/dev/null 2>&1 && die "running as root needs a 'postgres' OS user"
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
}

build_sluice() {
  log "building sluice (cargo build --release --bin sluice; the target dir is shared, this may wait)"
  if ! timeout "$BUILD_TIMEOUT" cargo build --release --bin sluice >"$WORK/build.log" 2>&1; then
    tail -n 40 "$WORK/build.log" >&2
    die "cargo build --release failed"
  fi
  # A private copy: a rebuild by someone else mid-run must not change the binary under test.
  cp "${CARGO_TARGET_DIR:-$REPO/target}/release/sluice" "$WORK/sluice"
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
max_connections = 200
shared_buffers = 256MB
password_encryption = 'scram-sha-256'
synchronous_commit = $SYNC_COMMIT
wal_level = replica
max_wal_senders = 10
hot_standby = on
EOF
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

create_bench_user() {
  local port=$1
  psql_admin "$port" <<EOF
SET password_encryption = 'scram-sha-256';
CREATE ROLE $BENCH_USER LOGIN PASSWORD '$BENCH_PASSWORD';
CREATE DATABASE $BENCH_DB OWNER $BENCH_USER;
EOF
  VERIFIER=$(psql_admin "$port" -At -c "SELECT rolpassword FROM pg_authid WHERE rolname = '$BENCH_USER'")
  case "$VERIFIER" in SCRAM-SHA-256\$*) ;; *) die "unexpected verifier for $BENCH_USER: $VERIFIER" ;; esac
}

# write_sluice_config FILE LISTEN_PORT NODE_PORT...
write_sluice_config() {
  local file=$1 listen=$2 i=0 port
  shift 2
  {
    echo "listen = \"127.0.0.1:$listen\""
    printf '\n[pool]\nmode = "transaction"\nsize = %s\n' "$POOL_SIZE"
    printf '\n[monitor]\nuser = "%s"\ndatabase = "postgres"\ninterval = "1s"\n' "$BENCH_USER"
    for port in "$@"; do
      i=$((i + 1))
      printf '\n[[nodes]]\nname = "pg%s"\nhost = "127.0.0.1"\nport = %s\n' "$i" "$port"
    done
    # The server's own verifier, as PgBouncer gets it; sluice answers the servers with the password.
    printf '\n[[users]]\nname = "%s"\npassword = "%s"\nserver_password = "%s"\nauth = "scram-sha-256"\n' \
      "$BENCH_USER" "$VERIFIER" "$BENCH_PASSWORD"
  } >"$file"
  "$WORK/sluice" check-config "$file" >&2 || die "sluice rejected $file"
}

# start_sluice CONFIG PORT LOG: sets SLUICE_PID.
start_sluice() {
  local config=$1 port=$2 logfile=$3
  SLUICE_LOG=${SLUICE_LOG:-warn} "$WORK/sluice" run --config "$config" >"$logfile" 2>&1 &
  SLUICE_PID=$!
  SLUICE_PIDS+=("$SLUICE_PID")
  wait_ready sluice "$port" "$SLUICE_PID" "$logfile"
  log "sluice (pid $SLUICE_PID) is up on 127.0.0.1:$port"
}

start_pgbouncer() {
  local port=$1 pg_port=$2
  printf '"%s" "%s"\n' "$BENCH_USER" "$VERIFIER" >"$WORK/userlist.txt"
  cat >"$WORK/pgbouncer.ini" <<EOF
[databases]
$BENCH_DB = host=127.0.0.1 port=$pg_port dbname=$BENCH_DB

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $WORK/userlist.txt
pool_mode = transaction
default_pool_size = $POOL_SIZE
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 1000
logfile = $WORK/pgbouncer.log
pidfile = $WORK/pgbouncer.pid
log_connections = 0
log_disconnections = 0
ignore_startup_parameters = extra_float_digits
EOF
  is_root && chown postgres "$WORK/userlist.txt" "$WORK/pgbouncer.ini"
  as_pg 86400 pgbouncer "$WORK/pgbouncer.ini" >"$WORK/pgbouncer.out" 2>&1 &
  PGB_PID=$!
  wait_ready pgbouncer "$port" "$PGB_PID" "$WORK/pgbouncer.out"
  log "pgbouncer $(pgbouncer --version 2>/dev/null | head -n 1 | awk '{print $2}') is up on 127.0.0.1:$port"
}

# add_replica NAME PORT PRIMARY_PORT
add_replica() {
  local dir="$WORK/$1" port=$2 primary=$3
  log "pg_basebackup -R -> $dir (port $port)"
  as_pg 600 "$PG_BINDIR/pg_basebackup" -h "$WORK" -p "$primary" -U postgres -D "$dir" \
    -R -X stream -c fast >"$WORK/$1.basebackup.log" 2>&1 ||
    { tail -n 20 "$WORK/$1.basebackup.log" >&2; die "pg_basebackup failed"; }
  start_server "$dir" "$port"
}

wait_streaming() {
  local primary=$1 want=$2 i n
  for i in $(seq 1 120); do
    n=$(psql_admin "$primary" -At -c "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
    [ "$n" -ge "$want" ] && return 0
    sleep 0.5
  done
  die "only $n of $want replicas are streaming after 60s"
}

# Reads through sluice reach a replica once the monitor has seen the replicas (bounded).
wait_replica_reads() {
  local port=$1 primary=$2 i got
  for i in $(seq 1 60); do
    got=$(psql_bench "$port" -c "SELECT current_setting('port')" 2>/dev/null || true)
    if [ -n "$got" ] && [ "$got" != "$primary" ]; then
      log "sluice routes reads to a replica (port $got)"
      return 0
    fi
    sleep 0.5
  done
  log "WARNING: reads through sluice still reach the primary after 30s"
}

# ---------------------------------------------------------------- measuring

declare -A PORT TPS FAILED NOTE

# The pgbench arguments of one test.
test_args() {
  case "$1" in
    select-simple) echo "-S -M simple" ;;
    select-extended) echo "-S -M extended" ;;
    select-prepared) echo "-S -M prepared" ;;
    tpcb) echo "-M simple" ;;
    logins) echo "-C -f $WORK/select1.sql" ;;
  esac
}

# run_bench TEST TARGET: one pgbench run, results into TPS/FAILED/NOTE[TEST,TARGET].
run_bench() {
  local test=$1 target=$2 key="$1,$2" out="$WORK/runs/$1.$2.log" rc=0 secs=$DURATION clients=$CLIENTS
  if [ "$test" = logins ]; then secs=$LOGIN_DURATION clients=$LOGIN_CLIENTS; fi
  [ "$test" = tpcb ] && reset_tpcb
  # shellcheck disable=SC2046 # test_args is a word list on purpose
  PGPASSWORD=$BENCH_PASSWORD timeout $((secs + 120)) "$PG_BINDIR/pgbench" -n $(test_args "$test") \
    -T "$secs" -c "$clients" -j "$THREADS" -h 127.0.0.1 -p "${PORT[$target]}" -U "$BENCH_USER" \
    "$BENCH_DB" >"$out" 2>&1 || rc=$?
  TPS[$key]=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$out" | head -n 1 | awk '{ printf "%.1f", $1 }')
  FAILED[$key]=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out" | head -n 1)
  local aborted
  aborted=$(grep -Ec 'client [0-9]+ (script [0-9]+ )?aborted' "$out" || true)
  if [ "$rc" != 0 ] || [ "$aborted" != 0 ] || [ -z "${TPS[$key]}" ]; then
    NOTE[$key]="exit $rc, $aborted clients aborted: $(grep -m 1 -E 'ERROR|FATAL|error' "$out" | cut -c 1-200)"
  fi
  log "$(printf '%-16s %-10s tps=%-10s failed=%s %s' "$test" "$target" "${TPS[$key]:-?}" \
    "${FAILED[$key]:-?}" "${NOTE[$key]:+($rc/$aborted aborted)}") load=$(cut -d' ' -f1-3 /proc/loadavg)"
}

# What pgbench's own vacuum step does before a TPC-B run, done directly and untimed.
reset_tpcb() {
  psql_admin "${PORT[primary]}" -d "$BENCH_DB" \
    -c "VACUUM pgbench_branches, pgbench_tellers" -c "TRUNCATE pgbench_history" >/dev/null
}

warm_up() {
  local target
  for target in "$@"; do
    PGPASSWORD=$BENCH_PASSWORD timeout $((WARMUP + 60)) "$PG_BINDIR/pgbench" -n -S -T "$WARMUP" \
      -c "$CLIENTS" -j "$THREADS" -h 127.0.0.1 -p "${PORT[$target]}" -U "$BENCH_USER" "$BENCH_DB" \
      >"$WORK/runs/warmup.$target.log" 2>&1 || log "warm-up through $target failed"
  done
}

# ---------------------------------------------------------------- report

ratio() {
  awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b != "" && b + 0 > 0) printf "%.2f", a / b; else printf "-" }'
}

print_report() {
  local targets=(direct sluice) test t row
  [ -n "${PORT[pgbouncer]:-}" ] && targets+=(pgbouncer)
  [ -n "${PORT[sluice_2r]:-}" ] && targets+=(sluice_2r)
  echo
  echo "sluice load comparison  $(date -u +%Y-%m-%dT%H:%MZ)  sluice $(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet HEAD -- src 2>/dev/null || echo '+dirty')"
  echo "PostgreSQL $("$PG_BINDIR/postgres" --version | awk '{print $3}'), pgbench -T $DURATION -c $CLIENTS -j $THREADS, scale $SCALE, pool size $POOL_SIZE (transaction mode), synchronous_commit=$SYNC_COMMIT, $(nproc) cores"
  echo "logins: pgbench -C -f 'SELECT 1' -T $LOGIN_DURATION -c $LOGIN_CLIENTS (tps = logins/s, SCRAM-SHA-256 each)"
  echo
  row='%-16s'
  for t in "${targets[@]}"; do row+=' %11s'; done
  row+=' %14s %16s'
  [ -n "${PORT[sluice_2r]:-}" ] && row+=' %16s'
  row+='   %s\n'
  local header=(test "${targets[@]}" sluice/direct pgbouncer/direct)
  [ -n "${PORT[sluice_2r]:-}" ] && header+=(sluice_2r/direct)
  # shellcheck disable=SC2059 # the format is built above
  printf "$row" "${header[@]}" "failed tx (per target)"
  for test in "${TESTS[@]}" logins; do
    local cells=() fails=()
    for t in "${targets[@]}"; do
      cells+=("${TPS[$test,$t]:--}")
      fails+=("${FAILED[$test,$t]:--}${NOTE[$test,$t]:+!}")
    done
    cells+=("$(ratio "${TPS[$test,sluice]:-}" "${TPS[$test,direct]:-}")")
    cells+=("$(ratio "${TPS[$test,pgbouncer]:-}" "${TPS[$test,direct]:-}")")
    [ -n "${PORT[sluice_2r]:-}" ] && cells+=("$(ratio "${TPS[$test,sluice_2r]:-}" "${TPS[$test,direct]:-}")")
    # shellcheck disable=SC2059
    printf "$row" "$test" "${cells[@]}" "$(IFS=/; echo "${fails[*]}")"
  done
  echo
  echo "'-' = not run; '!' = the run failed or clients aborted:"
  local k
  for k in "${!NOTE[@]}"; do echo "  $k: ${NOTE[$k]}"; done | sort
  [ -n "${REPLICA_SHARE:-}" ] && echo "sluice_2r: transactions per node during its three -S runs: $REPLICA_SHARE"
  echo "load average at start: $LOAD_START, at end: $(cut -d' ' -f1-3 /proc/loadavg)"
}

# Committed transactions per node (bench database), for the replica variant.
xacts() {
  local p out=""
  for p in "$@"; do
    out+="$(psql_admin "$p" -At -c "SELECT xact_commit FROM pg_stat_database WHERE datname = '$BENCH_DB'") "
  done
  echo "$out"
}

# ---------------------------------------------------------------- main

main() {
  check_prerequisites
  LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/sluice-load.XXXXXX")
  chmod 755 "$WORK"
  is_root && chown postgres "$WORK"
  mkdir -p "$WORK/runs"
  echo 'SELECT 1;' >"$WORK/select1.sql"

  build_sluice
  install_pgbouncer

  pick_port
  PORT[primary]=$PICKED
  PORT[direct]=$PICKED
  init_primary "$WORK/primary" "${PORT[primary]}"
  create_bench_user "${PORT[primary]}"
  log "pgbench -i -s $SCALE"
  PGPASSWORD=$BENCH_PASSWORD timeout 900 "$PG_BINDIR/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 \
    -p "${PORT[primary]}" -U "$BENCH_USER" "$BENCH_DB" >"$WORK/init.log" 2>&1 ||
    { tail -n 20 "$WORK/init.log" >&2; die "pgbench -i failed"; }
  psql_admin "${PORT[primary]}" -c CHECKPOINT

  pick_port
  PORT[sluice]=$PICKED
  write_sluice_config "$WORK/sluice.toml" "${PORT[sluice]}" "${PORT[primary]}"
  start_sluice "$WORK/sluice.toml" "${PORT[sluice]}" "$WORK/sluice.log"
  local targets=(direct sluice)
  if command -v pgbouncer >/dev/null; then
    pick_port
    PORT[pgbouncer]=$PICKED
    start_pgbouncer "${PORT[pgbouncer]}" "${PORT[primary]}"
    targets+=(pgbouncer)
  fi

  log "warm-up: ${WARMUP}s of -S per target"
  warm_up "${targets[@]}"
  local test target
  for test in "${TESTS[@]}" logins; do
    for target in "${targets[@]}"; do run_bench "$test" "$target"; done
  done

  if [ "$REPLICAS" = 1 ]; then
    pick_port
    local r1=$PICKED
    pick_port
    local r2=$PICKED
    add_replica replica1 "$r1" "${PORT[primary]}"
    add_replica replica2 "$r2" "${PORT[primary]}"
    wait_streaming "${PORT[primary]}" 2
    pick_port
    PORT[sluice_2r]=$PICKED
    write_sluice_config "$WORK/sluice_2r.toml" "${PORT[sluice_2r]}" "${PORT[primary]}" "$r1" "$r2"
    start_sluice "$WORK/sluice_2r.toml" "${PORT[sluice_2r]}" "$WORK/sluice_2r.log"
    wait_replica_reads "${PORT[sluice_2r]}" "${PORT[primary]}"
    warm_up sluice_2r
    local before after
    before=$(xacts "${PORT[primary]}" "$r1" "$r2")
    for test in select-simple select-extended select-prepared; do run_bench "$test" sluice_2r; done
    after=$(xacts "${PORT[primary]}" "$r1" "$r2")
    run_bench tpcb sluice_2r
    REPLICA_SHARE=$(paste -d' ' <(tr ' ' '\n' <<<"$before") <(tr ' ' '\n' <<<"$after") |
      awk 'NF == 2 { n++; printf "%s=%d ", (n == 1 ? "primary" : "replica" n - 1), $2 - $1 }')
  fi

  print_report
  for f in "$WORK"/sluice*.log; do
    [ -s "$f" ] && { log "$(basename "$f") (last lines):"; tail -n 5 "$f" >&2; }
  done
  return 0
}

main "$@"
