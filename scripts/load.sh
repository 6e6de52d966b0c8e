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
#   POOL_SIZE=16                       server connections per pool, sluice and PgBouncer alike (lib.sh)
#   SCALE=10                           pgbench -i -s
#   LOGIN_DURATION=10 LOGIN_CLIENTS=8  the logins/s runs (pgbench -C, one `SELECT 1` per login)
#   WARMUP=5                           unrecorded -S seconds per target before measuring
#   REPLICAS=1                         0 skips the primary + 2 replicas variant
#   SYNC_COMMIT=off                    synchronous_commit of the server (off keeps TPC-B CPU-bound)
#   PG_BINDIR, BUILD_TIMEOUT, KEEP, ...: see scripts/lib.sh
#
# The numbers are only comparable within one run: on a small shared machine the load generator,
# the proxy and the servers compete for the same cores.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

DURATION=${DURATION:-15}
CLIENTS=${CLIENTS:-16}
THREADS=${THREADS:-2}
SCALE=${SCALE:-10}
LOGIN_DURATION=${LOGIN_DURATION:-10}
LOGIN_CLIENTS=${LOGIN_CLIENTS:-8}
WARMUP=${WARMUP:-5}
REPLICAS=${REPLICAS:-1}
TESTS=(select-simple select-extended select-prepared tpcb)
LOG_TAG=load
# shellcheck source=scripts/lib.sh
. "$REPO/scripts/lib.sh"
lib_traps

# ---------------------------------------------------------------- replicas

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
  echo "sluice load comparison  $(date -u +%Y-%m-%dT%H:%MZ)  sluice $(sluice_version)"
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
  check_prerequisites initdb pg_ctl pg_basebackup psql pgbench
  LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
  make_work sluice-load
  mkdir -p "$WORK/runs"
  echo 'SELECT 1;' >"$WORK/select1.sql"

  build_release bin:sluice
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
