#!/usr/bin/env bash
# Where sluice's CPU goes per transaction, measured two ways against a throwaway primary:
#
# 1. counts: sluice runs normally while pgbench runs TEST for DURATION seconds; reported per
#    transaction: sluice's user and system CPU (from /proc) and its context switches (voluntary
#    = a thread went to sleep waiting, i.e. wake-ups), plus the same for the server backends'
#    total for scale.
# 2. callgrind (TOOL=callgrind, the default; valgrind must be installed): sluice runs under
#    valgrind's callgrind, which counts instructions deterministically (unlike timing on a shared
#    machine); counters are zeroed after a warm-up, TRANSACTIONS transactions run, and the report
#    lists instructions per transaction and the functions they are spent in (inclusive cost).
#    Outside connect-*, the figures per transaction leave the measured run's logins out (see
#    profile_callgrind). TOOL=none skips it.
#
# Usage: scripts/profile.sh [select-simple|select-extended|select-prepared|select-alternate|tpcb|connect-trust|
# connect-scram|server-churn]   (default select-simple; connect-*: pgbench -C, one login per transaction;
# server-churn: `SELECT 1` with a server lifetime of 1 ms, so nearly every transaction opens a
# server connection, sluice logging in to PostgreSQL with SCRAM). Knobs: DURATION=10 CLIENTS=16 TRANSACTIONS=3000 (callgrind, total)
# TOOL=callgrind|none, SLUICE_BIN, KEEP, ... (scripts/lib.sh). Everything listens on 127.0.0.1 and
# is removed on exit. Output goes to stdout; the raw callgrind file is kept in OUT_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

TEST=${1:-select-simple}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-16}
TRANSACTIONS=${TRANSACTIONS:-3000}
TOOL=${TOOL:-callgrind}
OUT_DIR=${OUT_DIR:-$REPO/target/profile}
LOG_TAG=profile
# shellcheck source=scripts/lib.sh
. "$REPO/scripts/lib.sh"
lib_traps

case "$TEST" in
  select-simple) ARGS="-S -M simple" ;;
  select-extended) ARGS="-S -M extended" ;;
  select-prepared) ARGS="-S -M prepared" ;;
  # Two point selects in turn through the unnamed statement, as a driver runs different
  # queries: every Parse brings a text other than the statement's last one (two units per
  # transaction).
  select-alternate) ARGS="-M extended -f ALTERNATE" ;;
  tpcb) ARGS="-M simple" ;;
  # A new connection per transaction (as in scripts/load.sh): one login + `SELECT 1` + logout.
  connect-trust | connect-scram) ARGS="-C -f SELECT1" ;;
  server-churn)
    ARGS="-f SELECT1"
    SLUICE_POOL_EXTRA='server_lifetime = "1ms"'
    ;;
  *) die "unknown test $TEST" ;;
esac
# connect-trust logs in without a password (trust on every hop), the others with SCRAM.
USER_OF_TEST=$BENCH_USER
[ "$TEST" = connect-trust ] && USER_OF_TEST=$TRUST_USER

# pgbench through sluice; extra arguments follow (-T or -t).
bench() {
  [ -s "$WORK/select1.sql" ] || echo 'SELECT 1;' >"$WORK/select1.sql"
  [ -s "$WORK/alternate.sql" ] || printf '%s\n' '\set aid random(1, 100000)' \
    'SELECT abalance FROM pgbench_accounts WHERE aid = :aid;' \
    'SELECT bid FROM pgbench_accounts WHERE aid = :aid;' >"$WORK/alternate.sql"
  local args=${ARGS/SELECT1/$WORK/select1.sql}
  # shellcheck disable=SC2086 # ARGS is a word list on purpose
  PGPASSWORD=$BENCH_PASSWORD timeout 900 "$PG_BINDIR/pgbench" -n ${args/ALTERNATE/$WORK/alternate.sql} -c "$CLIENTS" -j 2 -h 127.0.0.1 \
    -p "$SLUICE_PORT" -U "$USER_OF_TEST" "$@" "$BENCH_DB"
}

# Sum over a process's threads of one /proc/PID/task/*/status field.
thread_sum() { cat "/proc/$1"/task/*/status 2>/dev/null | awk -v f="$2:" '$1 == f { s += $2 } END { print s + 0 }'; }
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12, $13 }'; }

counts() {
  local pid=$1 before after vol0 inv0 out tx
  bench -T 3 >/dev/null 2>&1 || true
  before=$(cpu_ticks "$pid") vol0=$(thread_sum "$pid" voluntary_ctxt_switches)
  inv0=$(thread_sum "$pid" nonvoluntary_ctxt_switches)
  out=$(bench -T "$DURATION" 2>&1) || die "pgbench failed: $out"
  after=$(cpu_ticks "$pid")
  tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
  awk -v b="$before" -v a="$after" -v n="$tx" -v hz="$(getconf CLK_TCK)" \
    -v vol="$(($(thread_sum "$pid" voluntary_ctxt_switches) - vol0))" \
    -v inv="$(($(thread_sum "$pid" nonvoluntary_ctxt_switches) - inv0))" \
    -v tps="$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out")" 'BEGIN {
      split(b, x, " "); split(a, y, " ")
      printf "%s transactions (%.0f tps, %s clients): sluice CPU per transaction %.1f us user + %.1f us system;", n, tps, '"$CLIENTS"', (y[1] - x[1]) * 1e6 / hz / n, (y[2] - x[2]) * 1e6 / hz / n
      printf " context switches per transaction %.2f voluntary (wake-ups), %.2f involuntary\n", vol / n, inv / n }'
}

# Instructions of every function in a callgrind dump, one "cost<TAB>name" line each (self cost,
# or inclusive with --inclusive=yes as $2).
# Call lines ("=> callee (N calls)") are left out.
cg_functions() {
  callgrind_annotate --threshold=100 ${2:+"$2"} "$1" 2>/dev/null | sed -n '/^Ir/,$p' | grep '%)' | grep -v '%) *=> ' |
    sed -E 's/^ *([0-9,]+) +\( *[0-9.]+%\) +/\1\t/; s/ \[[^]]*\]$//' | awk -F '\t' '{ gsub(",", "", $1); print $1 "\t" $2 }'
}

# The functions of dump $2 minus those of dump $1, per transaction ($3 transactions), largest
# first: "per-tx<TAB>name". $4: callgrind_annotate's option (--inclusive=yes), if any.
cg_diff() {
  local small=$1 big=$2 n=$3 opt=${4:-}
  awk -F '\t' -v n="$n" 'NR == FNR { s[$2] = $1; next } { d = $1 - s[$2]; printf "%.0f\t%s\n", d / n, $2 }' \
    <(cg_functions "$small" "$opt") <(cg_functions "$big" "$opt") | sort -t "$(printf '\t')" -k1,1 -rn
}

cg_total() { callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }'; }

# The newest callgrind dump of this test written after file $1.
cg_dump_after() { find "$OUT_DIR" -name "callgrind.$TEST.out*" -newer "$1" | sort -V | tail -n 1; }

# Under callgrind, counters are zeroed after a warm-up. For connect-* (one login per
# transaction) one measured run gives the figures per login. For the others, the measured run's
# own 16 logins (and logouts; ~830 instructions per transaction with SCRAM, more than the spread
# of the figures) are taken out: a run of one transaction per client is dumped first, then the
# measured run, and the figures per transaction are (measured - short) / (transactions of the
# measured run - those of the short one): both runs log the same clients in and out. The
# measured run's own total per transaction (logins included, as reported before the twelfth
# round) is printed too.
profile_callgrind() {
  local cfg=$1 out="$OUT_DIR/callgrind.$TEST.out" pid per_client=$((TRANSACTIONS / CLIENTS)) short=""
  command -v valgrind >/dev/null || die "valgrind is missing (apt-get install valgrind)"
  pick_port
  SLUICE_PORT=$PICKED
  write_sluice_config "$WORK/cg.toml" "$SLUICE_PORT" "$PRIMARY_PORT"
  SLUICE_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$WORK/sluice" run --config "$WORK/cg.toml" >"$WORK/cg.log" 2>&1 &
  pid=$!
  SLUICE_PIDS+=("$pid")
  wait_ready "sluice under callgrind" "$SLUICE_PORT" "$pid" "$WORK/cg.log"
  bench -t 50 >/dev/null 2>&1 || true
  callgrind_control -z "$pid" >/dev/null
  if [[ $TEST != connect-* ]]; then
    bench -t 1 >"$WORK/cg.short.log" 2>&1 || die "pgbench under callgrind failed (short run)"
    callgrind_control -d "$pid" >/dev/null
    short=$(cg_dump_after "$WORK/cg.short.log")
    [ -n "$short" ] || die "no callgrind dump of the short run"
  fi
  bench -t "$per_client" >"$WORK/cg.bench.log" 2>&1 || die "pgbench under callgrind failed"
  callgrind_control -d "$pid" >/dev/null
  stop_pid "$pid"
  local dump total n=$((per_client * CLIENTS)) unit=transaction
  [[ $TEST == connect-* ]] && unit=login
  dump=$(cg_dump_after "$WORK/cg.bench.log")
  total=$(cg_total "$dump")
  echo "callgrind: $n transactions, $total instructions in sluice," \
    "$(awk -v t="$total" -v n="$n" 'BEGIN { printf "%.0f", t / n }') per $unit ($dump)"
  if [ -z "$short" ]; then
    local lines
    lines=$(callgrind_annotate --inclusive=yes "$dump" 2>/dev/null | sed -n '/^Ir/,$p' | grep '%)')
    echo "inclusive cost of sluice's own functions (top 35):"
    grep 'sluice::' <<<"$lines" | grep -v '^ *[0-9,]* *([0-9.]*%) *src/' | head -n 35 || true
    echo "allocator, tokio IO and syscalls wrappers (inclusive):"
    grep -E 'malloc|free|realloc|libc.so.6\]$|tokio::io|mio::' <<<"$lines" | head -n 20 || true
    return 0
  fi
  local short_total m=$(((per_client - 1) * CLIENTS)) diff
  short_total=$(cg_total "$short")
  echo "callgrind without the logins: ($total - $short_total of a run of 1 transaction per client) /" \
    "$m transactions = $(awk -v t="$total" -v s="$short_total" -v m="$m" 'BEGIN { printf "%.0f", (t - s) / m }')" \
    "per transaction ($short)"
  diff=$(cg_diff "$short" "$dump" "$m" --inclusive=yes)
  echo "inclusive cost per transaction without the logins, sluice's own functions (top 35):"
  grep 'sluice::' <<<"$diff" | head -n 35 || true
  echo "allocator, tokio IO and syscalls wrappers (inclusive, without the logins):"
  grep -E 'malloc|free|realloc|libc.so.6|tokio::io|mio::' <<<"$diff" | grep -v -E 'start_thread|clone' | head -n 20 || true
}

main() {
  check_prerequisites initdb pg_ctl psql pgbench
  make_work sluice-profile
  mkdir -p "$OUT_DIR"
  build_release bin:sluice
  setup_primary 1
  pick_port
  SLUICE_PORT=$PICKED
  write_sluice_config "$WORK/sluice.toml" "$SLUICE_PORT" "$PRIMARY_PORT"
  start_sluice "$WORK/sluice.toml" "$SLUICE_PORT" "$WORK/sluice.log"
  echo "## $TEST through sluice $(sluice_version), $(nproc) cores shared with other work (load $(cut -d' ' -f1-3 /proc/loadavg))"
  counts "$SLUICE_PID"
  stop_pid "$SLUICE_PID"
  [ "$TOOL" = callgrind ] && profile_callgrind "$WORK/cg.toml"
  return 0
}

main "$@"
