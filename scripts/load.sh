#!/usr/bin/env bash
# Load comparison on this machine, in one run: pgbench directly against PostgreSQL, through sluice
# and through PgBouncer (both in transaction pooling mode with the same pool size, both checking
# clients with SCRAM-SHA-256 against the server's own verifier, or trust for the trust role).
#
# Tests (MODE=load, the default):
#   select-simple / select-extended / select-prepared   pgbench -S -M ... at SELECT_CLIENTS (32)
#   tpcb                                               pgbench -M simple at TPCB_CLIENTS (16)
#   connect-trust / connect-scram                      pgbench -C, one `SELECT 1` per login, at
#                                                      LOGIN_CLIENTS (8); tps = logins per second
#   latency-1client                                    pgbench -S -M extended with one client: the
#                                                      cores are not saturated, so the latency a
#                                                      proxy adds is its own hop (two more socket
#                                                      round trips and its work), not run-queue time
# Each test runs REPS times (3), the targets interleaved within every rep (direct, sluice,
# PgBouncer, then the next test), so drift of a noisy machine hits all targets alike. Reported per
# (test, target): the median over reps of tps, average latency and p99 latency (p99 from
# pgbench's per-transaction logs, `--log`), the ratio to direct and to PgBouncer, and the p99 the
# proxy adds over direct, and the proxy's own CPU per transaction (user + system time of its
# process from /proc over the run, divided by the transactions: the figure least disturbed by the
# other load on a shared machine). With REPLICAS=1 a second sluice in front of the primary + two streaming
# replicas (pg_basebackup -R) then runs the select tests and TPC-B and reports reads per node.
#
# MODE=idle: the idle footprint. IDLE_CLIENTS (10,000) clients log in with SCRAM to sluice, then
# to PgBouncer (examples/idle.rs), are held idle, then each runs `SELECT 1`; reported: the
# proxy's RSS before, while held, and after the selects. MODE=all does both.
#
# Output: a Markdown report on stdout and in OUT_DIR/load-<time>.md, every single run as a CSV
# row in OUT_DIR/load-<time>.csv (OUT_DIR defaults to target/load).
#
# QUICK=1: one rep of 4 s per test, a small scale, the replica variant with one test: under three
# minutes once the release build exists. Numbers from it are rough.
#
# Knobs (environment):
#   DURATION=15 REPS=3 THREADS=2 SCALE=10 WARMUP=5
#   SELECT_CLIENTS=32 TPCB_CLIENTS=16 LOGIN_CLIENTS=8 LOGIN_DURATION=10
#   REPLICAS=1                  0 skips the primary + 2 replicas variant
#   B_WORKERS= B_LAYOUT=        an A/B of sluice's [runtime] in one run: either one set starts a
#                               second sluice, sluice-b, in front of the same primary with the same
#                               config but these [runtime] keys (workers, layout), as a fourth
#                               target in every rep (direct, sluice, sluice-b, PgBouncer; sluice
#                               and sluice-b swapped in even reps), in MODE=load/all but not in the
#                               idle run nor the replica variant, and adds a table "A/B: sluice-b
#                               against sluice": tps of each, sluice-b/sluice (of the medians and
#                               per rep), sluice-b/direct, sluice-b/PgBouncer, CPU us/tx and p99 of
#                               each; CSV rows with target sluice-b.
#                               Empty: as sluice (SLUICE_WORKERS / SLUICE_LAYOUT of scripts/lib.sh);
#                               `default`: the key left out (the config default). E.g. B_WORKERS=1;
#                               B_WORKERS=default without SLUICE_* is an A/A run (the noise floor).
#   B_BIN=                      sluice-b runs this sluice binary (e.g. a build of another commit):
#                               an A/B of code in one run; alone, or with B_WORKERS / B_LAYOUT.
#                               B_NAME= names it in the report (e.g. the commit it was built from).
#   IDLE_CLIENTS=10000 IDLE_HOLD=10 (seconds the connections are held per phase)
#   POOL_SIZE, SYNC_COMMIT, PG_BINDIR, BUILD_TIMEOUT, KEEP, ...: see scripts/lib.sh
#
# What it does: builds sluice and examples/idle (release), starts a throwaway PostgreSQL primary
# in a temporary directory (as the `postgres` OS user when run as root), installs PgBouncer with
# apt when it is missing and we are root, runs `pgbench -i` once, then the tests. Everything
# listens on 127.0.0.1 on free ports below 32768 and is stopped and removed on exit, failure or
# Ctrl-C. Every step is bounded by `timeout`.
#
# The numbers are only comparable within one run: on a small shared machine the load generator,
# the proxy and the servers compete for the same cores.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
  DURATION=${DURATION:-4} REPS=${REPS:-1} SCALE=${SCALE:-2} WARMUP=${WARMUP:-2}
  LOGIN_DURATION=${LOGIN_DURATION:-3}
fi
MODE=${MODE:-load}
DURATION=${DURATION:-15}
REPS=${REPS:-3}
THREADS=${THREADS:-2}
SCALE=${SCALE:-10}
WARMUP=${WARMUP:-5}
SELECT_CLIENTS=${SELECT_CLIENTS:-32}
TPCB_CLIENTS=${TPCB_CLIENTS:-16}
LOGIN_CLIENTS=${LOGIN_CLIENTS:-8}
LOGIN_DURATION=${LOGIN_DURATION:-10}
REPLICAS=${REPLICAS:-1}
IDLE_CLIENTS=${IDLE_CLIENTS:-10000}
IDLE_HOLD=${IDLE_HOLD:-10}
OUT_DIR=${OUT_DIR:-$REPO/target/load}
B_WORKERS=${B_WORKERS:-}
B_LAYOUT=${B_LAYOUT:-}
B_BIN=${B_BIN:-}
# TESTS="connect-trust connect-scram" runs only those (e.g. login-cost A/B runs).
read -r -a TESTS <<<"${TESTS:-select-simple select-extended select-prepared tpcb connect-trust connect-scram latency-1client}"
REPLICA_TESTS=(select-simple select-extended select-prepared tpcb)
[ "$QUICK" = 1 ] && REPLICA_TESTS=(select-extended)
if [ "$MODE" != load ]; then MAX_CLIENTS=${MAX_CLIENTS:-$((IDLE_CLIENTS + 200))}; fi
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

# Bounded; a replica that is slow to catch up on a loaded machine costs a warning, not the report.
wait_streaming() {
  local primary=$1 want=$2 i n
  for i in $(seq 1 240); do
    n=$(psql_admin "$primary" -At -c "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
    [ "$n" -ge "$want" ] && return 0
    sleep 0.5
  done
  log "WARNING: only $n of $want replicas are streaming after 120s; measuring anyway"
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

# Per (test,target): TPS/AVG/P99/CPU hold space-separated values, one per rep.
declare -A PORT PID TPS AVG P99 CPU FAILED NOTE
REPLICA_XACTS=""

# The pgbench arguments of one test, and its clients, seconds and user.
test_args() {
  case "$1" in
    select-simple) echo "-S -M simple" ;;
    select-extended) echo "-S -M extended" ;;
    select-prepared) echo "-S -M prepared" ;;
    tpcb) echo "-M simple" ;;
    connect-*) echo "-C -f $WORK/select1.sql" ;;
    latency-1client) echo "-S -M extended" ;;
  esac
}
test_clients() {
  case "$1" in
    select-*) echo "$SELECT_CLIENTS" ;;
    tpcb) echo "$TPCB_CLIENTS" ;;
    connect-*) echo "$LOGIN_CLIENTS" ;;
    latency-1client) echo 1 ;;
  esac
}
test_secs() { case "$1" in connect-*) echo "$LOGIN_DURATION" ;; *) echo "$DURATION" ;; esac; }
test_user() { case "$1" in connect-trust) echo "$TRUST_USER" ;; *) echo "$BENCH_USER" ;; esac; }

# latency_stats PREFIX: "avg_ms p99_ms" over pgbench's per-transaction logs PREFIX.* (the third
# field is the latency in microseconds; failed or skipped transactions are not numbers).
latency_stats() {
  cat "$1".* 2>/dev/null | awk '$3 ~ /^[0-9]+$/ { print $3 }' | sort -n | awk '
    { v[NR] = $1; s += $1 }
    END {
      if (NR == 0) { print "- -"; exit }
      i = int(NR * 0.99 + 0.999); if (i > NR) i = NR
      printf "%.3f %.3f\n", s / NR / 1000, v[i] / 1000
    }'
}

# cpu_ticks PID: user and system CPU of a process so far, in clock ticks ("- -" if unknown).
cpu_ticks() {
  [ -n "$1" ] && [ -r "/proc/$1/stat" ] || { echo "- -"; return 0; }
  # Fields after the ")" that ends the command name: utime is the 12th, stime the 13th.
  sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12, $13 }'
}

# proxy_cpu BEFORE AFTER TRANSACTIONS: "user_us sys_us" of proxy CPU per transaction.
proxy_cpu() {
  awk -v b="$1" -v a="$2" -v n="$3" -v hz="$(getconf CLK_TCK)" 'BEGIN {
    split(b, x, " "); split(a, y, " ")
    if (x[1] == "-" || y[1] == "-" || n + 0 <= 0) { print "- -"; exit }
    printf "%.1f %.1f\n", (y[1] - x[1]) * 1e6 / hz / n, (y[2] - x[2]) * 1e6 / hz / n }'
}

# run_bench TEST TARGET REP: one pgbench run; appends to TPS/AVG/P99[TEST,TARGET] and the CSV.
run_bench() {
  local test=$1 target=$2 rep=$3 key="$1,$2" rc=0 secs clients user
  local out="$WORK/runs/$test.$target.$rep.log" prefix="$WORK/runs/tx.$test.$target.$rep"
  secs=$(test_secs "$test") clients=$(test_clients "$test") user=$(test_user "$test")
  [ "$test" = tpcb ] && reset_tpcb
  local pid=${PID[$target]:-} cpu_before cpu
  cpu_before=$(cpu_ticks "$pid")
  # shellcheck disable=SC2046 # test_args is a word list on purpose
  PGPASSWORD=$BENCH_PASSWORD timeout $((secs + 120)) "$PG_BINDIR/pgbench" -n $(test_args "$test") \
    -T "$secs" -c "$clients" -j "$THREADS" -h 127.0.0.1 -p "${PORT[$target]}" -U "$user" \
    --log --log-prefix="$prefix" "$BENCH_DB" >"$out" 2>&1 || rc=$?
  local tps failed aborted stats
  tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$out" | head -n 1 | awk '{ printf "%.1f", $1 }')
  failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out" | head -n 1)
  aborted=$(grep -Ec 'client [0-9]+ (script [0-9]+ )?aborted' "$out" || true)
  stats=$(latency_stats "$prefix")
  rm -f "$prefix".*
  cpu=$(proxy_cpu "$cpu_before" "$(cpu_ticks "$pid")" \
    "$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out" | head -n 1)")
  if [ "$rc" != 0 ] || [ "$aborted" != 0 ] || [ -z "$tps" ]; then
    NOTE[$key]="exit $rc, $aborted clients aborted: $(grep -m 1 -E 'ERROR|FATAL|error' "$out" | cut -c 1-200)"
    tps=""
  fi
  TPS[$key]+="${tps:+$tps }" AVG[$key]+="${tps:+${stats% *} }" P99[$key]+="${tps:+${stats#* } }"
  [ "${cpu% *}" = - ] || CPU[$key]+="${tps:+$(awk -v c="$cpu" 'BEGIN { split(c, v, " "); print v[1] + v[2] }') }"
  FAILED[$key]=$((${FAILED[$key]:-0} + ${failed:-0}))
  echo "$test,$target,$rep,$clients,$secs,${tps:-},${stats% *},${stats#* },${failed:-},$rc,$aborted,,,,${cpu% *},${cpu#* }" >>"$CSV"
  log "$(printf '%-16s %-10s rep %s tps=%-9s avg=%sms p99=%sms failed=%s proxy CPU us/tx user/sys=%s' "$test" \
    "$target" "$rep" "${tps:-?}" "${stats% *}" "${stats#* }" "${failed:-?}" "${cpu/ //}") load=$(cut -d' ' -f1-3 /proc/loadavg)"
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
      -c "$SELECT_CLIENTS" -j "$THREADS" -h 127.0.0.1 -p "${PORT[$target]}" -U "$BENCH_USER" "$BENCH_DB" \
      >"$WORK/runs/warmup.$target.log" 2>&1 || log "warm-up through $target failed"
  done
}

# Committed transactions per node (bench database), for the replica variant.
xacts() {
  local p out=""
  for p in "$@"; do
    out+="$(psql_admin "$p" -At -c "SELECT xact_commit FROM pg_stat_database WHERE datname = '$BENCH_DB'") "
  done
  echo "$out"
}

# add_xacts BEFORE AFTER: REPLICA_XACTS += AFTER - BEFORE, node by node.
add_xacts() {
  REPLICA_XACTS=$(paste -d' ' <(tr ' ' '\n' <<<"$1") <(tr ' ' '\n' <<<"$2") \
    <(tr ' ' '\n' <<<"${REPLICA_XACTS:-0 0 0}") | awk 'NF >= 2 { printf "%d ", $2 - $1 + ($3 == "" ? 0 : $3) }')
}

# ---------------------------------------------------------------- report

# Median of space-separated numbers ("-" if none).
median() {
  tr ' ' '\n' <<<"$1" | awk 'NF' | sort -n | awk '{ v[NR] = $1 }
    END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

ratio() {
  awk -v a="$1" -v b="$2" 'BEGIN { if (a != "-" && b != "-" && a != "" && b != "" && b + 0 > 0) printf "%.2f", a / b; else printf "-" }'
}

# p99 added by a proxy over direct, in microseconds.
added_us() {
  awk -v a="$1" -v b="$2" 'BEGIN { if (a != "-" && b != "-" && a != "" && b != "") printf "%.0f", (a - b) * 1000; else printf "-" }'
}

# One Markdown row per test: medians, ratios, latencies.
report_rows() {
  local test t
  for test in "$@"; do
    local tps=() p99=() avg=() cpu=()
    for t in direct sluice pgbouncer sluice_2r; do
      tps+=("$(median "${TPS[$test,$t]:-}")")
      avg+=("$(median "${AVG[$test,$t]:-}")")
      p99+=("$(median "${P99[$test,$t]:-}")")
      cpu+=("$(median "${CPU[$test,$t]:-}")")
    done
    printf '| %s | %s | %s | %s | %s | **%s** | %s | **%s** | %s | %s / %s / %s | %s / %s / %s | %s | %s | %s / %s |\n' \
      "$test" "$(test_clients "$test")" "${tps[0]}" "${tps[1]}" "${tps[2]}" \
      "$(ratio "${tps[1]}" "${tps[0]}")" "$(ratio "${tps[2]}" "${tps[0]}")" "$(ratio "${tps[1]}" "${tps[2]}")" \
      "$(ratio "${tps[3]}" "${tps[0]}")" "${avg[0]}" "${avg[1]}" "${avg[2]}" "${p99[0]}" "${p99[1]}" "${p99[2]}" \
      "$(added_us "${p99[1]}" "${p99[0]}")" "$(added_us "${p99[2]}" "${p99[0]}")" "${cpu[1]}" "${cpu[2]}"
  done
}

# ab_rep_ratios TEST: sluice-b/sluice tps of each rep where both ran (from the CSV: a failed run
# leaves a gap there, not a shift).
ab_rep_ratios() {
  awk -F, -v t="$1" '$1 != t || $6 == "" { next }
    $2 == "sluice" { a[$3] = $6 }
    $2 == "sluice-b" { b[$3] = $6; if ($3 > last) last = $3 }
    END {
      for (r = 1; r <= last; r++) if ((r in a) && (r in b) && a[r] > 0) printf "%s%.2f", (n++ ? " " : ""), b[r] / a[r]
      if (!n) printf "-"
    }' "$CSV"
}

# The A/B table (B_WORKERS / B_LAYOUT): sluice-b against sluice, one row per test.
print_ab() {
  echo "A/B: sluice-b ($B_DESC) against sluice ($A_DESC), same run, same reps; medians:"
  echo
  echo "| test | clients | sluice tps | sluice-b tps | sluice-b/sluice | sluice-b/sluice per rep | sluice-b/direct | sluice-b/pgbouncer | proxy CPU us/tx sluice / sluice-b | p99 ms sluice / sluice-b |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  local test t
  for test in "${TESTS[@]}"; do
    local -A m=()
    for t in direct sluice sluice-b pgbouncer; do
      m[tps,$t]=$(median "${TPS[$test,$t]:-}")
      m[p99,$t]=$(median "${P99[$test,$t]:-}")
      m[cpu,$t]=$(median "${CPU[$test,$t]:-}")
    done
    printf '| %s | %s | %s | %s | **%s** | %s | %s | %s | %s / %s | %s / %s |\n' "$test" "$(test_clients "$test")" \
      "${m[tps,sluice]}" "${m[tps,sluice-b]}" "$(ratio "${m[tps,sluice-b]}" "${m[tps,sluice]}")" \
      "$(ab_rep_ratios "$test")" "$(ratio "${m[tps,sluice-b]}" "${m[tps,direct]}")" \
      "$(ratio "${m[tps,sluice-b]}" "${m[tps,pgbouncer]}")" "${m[cpu,sluice]}" "${m[cpu,sluice-b]}" \
      "${m[p99,sluice]}" "${m[p99,sluice-b]}"
  done
  echo
}

print_report() {
  echo "## sluice load comparison $(date -u +%Y-%m-%dT%H:%MZ), sluice $(sluice_version)"
  echo
  echo "PostgreSQL $("$PG_BINDIR/postgres" --version | awk '{print $3}'), PgBouncer $(pgbouncer_version)," \
    "pgbench -T $DURATION -j $THREADS (logins: -T $LOGIN_DURATION), scale $SCALE, $REPS rep(s) interleaved," \
    "medians; pool size $POOL_SIZE (transaction mode), synchronous_commit=$SYNC_COMMIT, $(nproc) cores" \
    "shared by pgbench, the servers and the proxy; load average at start $LOAD_START, at end $(cut -d' ' -f1-3 /proc/loadavg)."
  echo
  echo "| test | clients | direct tps | sluice tps | pgbouncer tps | sluice/direct | pgbouncer/direct | sluice/pgbouncer | sluice 2 replicas/direct | avg ms direct / sluice / pgb | p99 ms direct / sluice / pgb | p99 added us sluice | p99 added us pgb | proxy CPU us/tx sluice / pgb |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  report_rows "${TESTS[@]}"
  echo
  if [ -n "${PORT[sluice-b]:-}" ]; then print_ab; fi
  [ -n "$REPLICA_XACTS" ] && echo "sluice with 2 replicas, committed transactions per node during its select runs" \
    "(primary replica1 replica2): $REPLICA_XACTS"
  local k
  for k in "${!NOTE[@]}"; do echo "- failed run $k: ${NOTE[$k]}"; done | sort
  # `if`, not `&&`: under pipefail a last entry of 0 would fail the pipeline and end the report.
  for k in "${!FAILED[@]}"; do
    if [ "${FAILED[$k]}" != 0 ]; then echo "- failed transactions $k: ${FAILED[$k]}"; fi
  done | sort
  echo
}

# ---------------------------------------------------------------- load mode

# Start sluice and (if installed) PgBouncer in front of the primary; sets TARGETS.
start_proxies() {
  TARGETS=(direct)
  pick_port
  PORT[sluice]=$PICKED
  write_sluice_config "$WORK/sluice.toml" "${PORT[sluice]}" "${PORT[primary]}"
  start_sluice "$WORK/sluice.toml" "${PORT[sluice]}" "$WORK/sluice.log"
  SLUICE_MAIN_PID=$SLUICE_PID
  PID[sluice]=$SLUICE_PID
  TARGETS+=(sluice)
  if command -v pgbouncer >/dev/null; then
    pick_port
    PORT[pgbouncer]=$PICKED
    start_pgbouncer "${PORT[pgbouncer]}" "${PORT[primary]}"
    PID[pgbouncer]=$(cat "$WORK/pgbouncer.pid" 2>/dev/null || true)
    TARGETS+=(pgbouncer)
  fi
}

# runtime_desc LAYOUT WORKERS: a sluice's [runtime] as the report names it.
runtime_desc() { echo "layout ${1:-default}, workers ${2:-default: $(nproc) cores}"; }

# b_value B A: sluice-b's value of one [runtime] key: empty follows sluice's (A), `default`
# leaves the key out.
b_value() { case "$1" in "") echo "$2" ;; default) echo "" ;; *) echo "$1" ;; esac; }

# With B_WORKERS / B_LAYOUT: sluice-b, a second sluice in front of the primary whose config is
# sluice's but for [runtime] (the same write_sluice_config), as a target right after sluice.
start_sluice_b() {
  local layout workers t targets=()
  layout=$(b_value "$B_LAYOUT" "$SLUICE_LAYOUT") workers=$(b_value "$B_WORKERS" "$SLUICE_WORKERS")
  A_DESC=$(runtime_desc "$SLUICE_LAYOUT" "$SLUICE_WORKERS") B_DESC=$(runtime_desc "$layout" "$workers")
  local binary=$WORK/sluice
  if [ -n "$B_BIN" ]; then
    [ -x "$B_BIN" ] || die "B_BIN=$B_BIN is not an executable"
    binary=$WORK/sluice-b-bin
    cp "$B_BIN" "$binary"
    A_DESC="$A_DESC, sluice $(sluice_version)" B_DESC="$B_DESC, ${B_NAME:-the B_BIN binary}"
  fi
  pick_port
  PORT[sluice-b]=$PICKED
  SLUICE_LAYOUT=$layout SLUICE_WORKERS=$workers \
    write_sluice_config "$WORK/sluice-b.toml" "${PORT[sluice-b]}" "${PORT[primary]}"
  start_sluice "$WORK/sluice-b.toml" "${PORT[sluice-b]}" "$WORK/sluice-b.log" "$binary"
  PID[sluice-b]=$SLUICE_PID
  log "A/B: sluice-b ($B_DESC) against sluice ($A_DESC)"
  for t in "${TARGETS[@]}"; do
    targets+=("$t")
    if [ "$t" = sluice ]; then targets+=(sluice-b); fi
  done
  TARGETS=("${targets[@]}")
}

run_load() {
  if [ -n "$B_WORKERS$B_LAYOUT$B_BIN" ]; then start_sluice_b; fi
  log "warm-up: ${WARMUP}s of -S per target"
  warm_up "${TARGETS[@]}"
  local rep test target order
  for rep in $(seq 1 "$REPS"); do
    # sluice and sluice-b swap places every other rep: neither always runs right after direct.
    order=" ${TARGETS[*]} "
    if [ $((rep % 2)) = 0 ]; then order=${order/ sluice sluice-b / sluice-b sluice }; fi
    for test in "${TESTS[@]}"; do
      for target in $order; do run_bench "$test" "$target" "$rep"; done
    done
  done
  [ "$REPLICAS" = 1 ] || return 0
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
  PID[sluice_2r]=$SLUICE_PID
  wait_replica_reads "${PORT[sluice_2r]}" "${PORT[primary]}"
  warm_up sluice_2r
  local before
  for rep in $(seq 1 "$REPS"); do
    for test in "${REPLICA_TESTS[@]}"; do
      before=$(xacts "${PORT[primary]}" "$r1" "$r2")
      run_bench "$test" sluice_2r "$rep"
      [ "$test" = tpcb ] || add_xacts "$before" "$(xacts "${PORT[primary]}" "$r1" "$r2")"
    done
  done
}

# ---------------------------------------------------------------- idle mode

rss_mib() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo "-"; }

# wait_line FILE PATTERN SECONDS: until a line matching PATTERN is in FILE (or give up).
wait_line() {
  local i
  for i in $(seq 1 $(($3 * 2))); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.5
  done
  log "WARNING: no '$2' in $1 after $3 s"
  return 1
}

# idle_run TARGET PID: IDLE_CLIENTS SCRAM clients held on TARGET, its RSS before/held/after.
idle_run() {
  local target=$1 pid=$2 out="$WORK/runs/idle.$1.log" before held after client
  before=$(rss_mib "$pid")
  "$WORK/idle" --port "${PORT[$target]}" --user "$BENCH_USER" --password "$BENCH_PASSWORD" \
    --database "$BENCH_DB" --clients "$IDLE_CLIENTS" --hold-secs "$IDLE_HOLD" >"$out" 2>"$out.err" &
  client=$!
  EXTRA_PIDS+=("$client")
  wait_line "$out" '^connected=' 900 || true
  sleep 2
  held=$(rss_mib "$pid")
  wait_line "$out" '^selected=' 900 || true
  sleep 2
  after=$(rss_mib "$pid")
  timeout $((IDLE_HOLD + 60)) tail --pid="$client" -f /dev/null || stop_pid "$client"
  IDLE_ROWS+="| $target | $IDLE_CLIENTS | $(sed -n 's/^connected=\([0-9]*\) failed=\([0-9]*\).*/\1 (\2 failed)/p' "$out") |"
  IDLE_ROWS+=" $before | **$held** | $after | $(sed -n 's/^selected=\([0-9]*\) failed=\([0-9]*\).*/\1 (\2 failed)/p' "$out") |"$'\n'
  echo "idle,$target,1,$IDLE_CLIENTS,,,,,,$before,$held,$after" >>"$CSV"
  log "idle $target: RSS ${before} -> ${held} (held) -> ${after} MiB (after SELECT 1); $(tr '\n' ' ' <"$out")"
  [ -s "$out.err" ] && log "idle $target: $(sort "$out.err" | uniq -c | sort -rn | head -n 3 | tr '\n' ' ')"
  return 0
}

run_idle() {
  IDLE_ROWS=""
  log "idle footprint: $IDLE_CLIENTS SCRAM clients per proxy (open files limit $(ulimit -n))"
  idle_run sluice "$SLUICE_MAIN_PID"
  if [ -n "${PORT[pgbouncer]:-}" ]; then idle_run pgbouncer "$(cat "$WORK/pgbouncer.pid")"; fi
}

print_idle() {
  echo "## idle footprint: $IDLE_CLIENTS clients logged in with SCRAM-SHA-256, held ${IDLE_HOLD}s, then \`SELECT 1\` on each"
  echo
  echo "| proxy | clients | logged in | RSS MiB before | RSS MiB held | RSS MiB after SELECT 1 | selects ok |"
  echo "|---|---|---|---|---|---|---|"
  printf '%s' "$IDLE_ROWS"
  echo
}

# ---------------------------------------------------------------- main

main() {
  check_prerequisites initdb pg_ctl pg_basebackup psql pgbench
  case "$MODE" in load | idle | all) ;; *) die "MODE must be load, idle or all (not $MODE)" ;; esac
  LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
  make_work sluice-load
  mkdir -p "$WORK/runs" "$OUT_DIR"
  local stamp
  stamp=$(date -u +%Y%m%dT%H%M%SZ)
  CSV="$OUT_DIR/load-$stamp.csv"
  echo "test,target,rep,clients,seconds,tps,avg_ms,p99_ms,failed,exit,aborted,rss_before_mib,rss_held_mib,rss_after_mib,proxy_user_us_per_tx,proxy_sys_us_per_tx" >"$CSV"
  echo 'SELECT 1;' >"$WORK/select1.sql"

  build_release bin:sluice example:idle
  install_pgbouncer
  setup_primary "$SCALE"
  PORT[primary]=$PRIMARY_PORT
  PORT[direct]=$PRIMARY_PORT
  start_proxies
  [ "$MODE" = load ] || run_idle
  [ "$MODE" = idle ] || run_load

  {
    [ "$MODE" = idle ] || print_report
    [ "$MODE" = load ] || print_idle
  } | tee "$OUT_DIR/load-$stamp.md"
  log "report: $OUT_DIR/load-$stamp.md, every run: $CSV"
  for f in "$WORK"/sluice*.log; do
    [ -s "$f" ] && { log "$(basename "$f") (last lines):"; tail -n 5 "$f" >&2; }
  done
  return 0
}

main "$@"
