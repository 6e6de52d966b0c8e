#!/usr/bin/env bash
# Kernel work per transaction, sluice against PgBouncer, in one run against a throwaway primary:
#
# 1. CPU: pgbench runs TEST for DURATION seconds through sluice (the default `[runtime]`), through
#    sluice with `workers = 1` and through PgBouncer, REPS times interleaved; reported per run:
#    the proxy's user and system CPU per transaction (from /proc) and the load average (the CPU
#    figures are only comparable within a run on a shared machine) and its threads' voluntary
#    context switches per transaction (a thread went to sleep waiting: wake-ups).
# 2. syscalls: the same three under `strace -c -f` (which slows them: only the counts mean
#    anything, not the times), reported per transaction for every syscall made at least once per
#    100 transactions. With TRACE=1 also a full trace of one client running 5 transactions
#    (OUT_DIR/<target>.trace: which call moves how many bytes, e.g. whether a reply is split).
#
# Usage: scripts/syscalls.sh [tpcb|select-simple|connect-trust|connect-scram]   (default tpcb;
# connect-*: pgbench -C, one login + `SELECT 1` + logout per transaction). Knobs: DURATION=10 CLIENTS=16
# REPS=2 SCALE=10 TRACE=0 OUT_DIR=target/syscalls, SLUICE_BIN, NO_BUILD, ... (scripts/lib.sh).
# Needs strace. Everything listens on 127.0.0.1 and is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

TEST=${1:-tpcb}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-16}
REPS=${REPS:-2}
SCALE=${SCALE:-10}
TRACE=${TRACE:-0}
OUT_DIR=${OUT_DIR:-$REPO/target/syscalls}
LOG_TAG=syscalls
# shellcheck source=scripts/lib.sh
. "$REPO/scripts/lib.sh"
lib_traps

case "$TEST" in
  tpcb) ARGS="-M simple" ;;
  select-simple) ARGS="-S -M simple" ;;
  connect-trust | connect-scram) ARGS="-C -f SELECT1" ;;
  *) die "unknown test $TEST" ;;
esac
# connect-trust logs in without a password (trust on every hop), the others with SCRAM.
USER_OF_TEST=$BENCH_USER
[ "$TEST" = connect-trust ] && USER_OF_TEST=$TRUST_USER

# pgbench against PORT; extra arguments follow (-T or -t, -c).
bench() {
  local port=$1
  shift
  [ -s "$WORK/select1.sql" ] || echo 'SELECT 1;' >"$WORK/select1.sql"
  # shellcheck disable=SC2086 # ARGS is a word list on purpose
  PGPASSWORD=$BENCH_PASSWORD timeout 300 "$PG_BINDIR/pgbench" -n ${ARGS/SELECT1/$WORK/select1.sql} -j 2 \
    -h 127.0.0.1 -p "$port" -U "$USER_OF_TEST" "$@" "$BENCH_DB"
}
processed() { sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$1"; }
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12, $13 }'; }
# Voluntary context switches (a thread went to sleep waiting) summed over a process's threads.
sleeps() { cat "/proc/$1"/task/*/status 2>/dev/null | awk '$1 == "voluntary_ctxt_switches:" { s += $2 } END { print s + 0 }'; }

# cpu NAME PORT PID: the proxy's CPU per transaction over one run.
cpu() {
  local name=$1 port=$2 pid=$3 out before after sleeps0
  bench "$port" -c "$CLIENTS" -T 2 >/dev/null 2>&1 || true
  before=$(cpu_ticks "$pid") sleeps0=$(sleeps "$pid")
  out=$(bench "$port" -c "$CLIENTS" -T "$DURATION" 2>&1) || die "pgbench through $name failed: $out"
  after=$(cpu_ticks "$pid")
  awk -v b="$before" -v a="$after" -v n="$(processed "$out")" -v hz="$(getconf CLK_TCK)" -v name="$name" \
    -v sl="$(($(sleeps "$pid") - sleeps0))" -v load="$(cut -d' ' -f1 /proc/loadavg)" 'BEGIN {
      split(b, x, " "); split(a, y, " ")
      printf "cpu %-10s %7d transactions: %5.1f us user + %5.1f us system, %.2f sleeps per transaction (load %s)\n",
        name, n, (y[1] - x[1]) * 1e6 / hz / n, (y[2] - x[2]) * 1e6 / hz / n, sl / n, load }'
}

# syscalls NAME PORT PID: strace -c of the proxy (all threads) over one run.
syscalls() {
  local name=$1 port=$2 pid=$3 out tracer n
  strace -c -f -p "$pid" -o "$OUT_DIR/$name.strace" 2>/dev/null &
  tracer=$!
  sleep 1
  out=$(bench "$port" -c "$CLIENTS" -T "$DURATION" 2>&1) || die "pgbench through $name failed: $out"
  kill -INT "$tracer"
  wait "$tracer" || true
  n=$(processed "$out")
  echo "syscalls $name: $n transactions under strace"
  # strace -c columns: % time, seconds, usecs/call, calls, [errors], syscall.
  awk -v n="$n" '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ && $4 * 100 >= n && $NF != "total" {
      printf "  %-12s %6.2f per transaction\n", $NF, $4 / n; s += $4 }
    END { printf "  %-12s %6.2f per transaction\n", "(these)", s / n }' "$OUT_DIR/$name.strace"
  [ "$TRACE" = 1 ] || return 0
  strace -f -tt -e trace=%network,%desc -s 0 -p "$pid" -o "$OUT_DIR/$name.trace" 2>/dev/null &
  tracer=$!
  sleep 1
  bench "$port" -c 1 -t 5 >/dev/null 2>&1 || true
  kill -INT "$tracer"
  wait "$tracer" || true
}

main() {
  check_prerequisites initdb pg_ctl psql pgbench
  command -v strace >/dev/null || die "strace is missing (apt-get install strace)"
  mkdir -p "$OUT_DIR"
  make_work sluice-syscalls
  build_release bin:sluice
  setup_primary "$SCALE"
  local sp sp1 bp s_pid s1_pid b_pid r
  pick_port
  sp=$PICKED
  write_sluice_config "$WORK/sluice.toml" "$sp" "$PRIMARY_PORT"
  start_sluice "$WORK/sluice.toml" "$sp" "$WORK/sluice.log"
  s_pid=$SLUICE_PID
  pick_port
  sp1=$PICKED
  SLUICE_WORKERS=1 write_sluice_config "$WORK/sluice1.toml" "$sp1" "$PRIMARY_PORT"
  start_sluice "$WORK/sluice1.toml" "$sp1" "$WORK/sluice1.log"
  s1_pid=$SLUICE_PID
  install_pgbouncer
  pick_port
  bp=$PICKED
  start_pgbouncer "$bp" "$PRIMARY_PORT"
  b_pid=$(cat "$WORK/pgbouncer.pid")
  echo "## $TEST, $CLIENTS clients, sluice $(sluice_version), PgBouncer $(pgbouncer_version), $(nproc) cores"
  for r in $(seq 1 "$REPS"); do
    cpu sluice "$sp" "$s_pid"
    cpu sluice-w1 "$sp1" "$s1_pid"
    cpu pgbouncer "$bp" "$b_pid"
  done
  syscalls sluice "$sp" "$s_pid"
  syscalls sluice-w1 "$sp1" "$s1_pid"
  syscalls pgbouncer "$bp" "$b_pid"
}

main "$@"
