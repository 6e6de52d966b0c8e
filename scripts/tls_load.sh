#!/usr/bin/env bash
# TLS load comparison in one run: pgbench select-only with sslmode=require directly against
# PostgreSQL (ssl = on), through sluice ([client_tls] require, [server_tls] require) and through
# PgBouncer (client_tls_sslmode = require, server_tls_sslmode = require), all in transaction
# pooling mode with the same pool size, clients checked with SCRAM-SHA-256 against the server's
# verifier. Also TLS logins per second (pgbench -C: a TLS handshake + SCRAM per transaction).
#
# A throwaway CA and server certificate (openssl command line) serve all three. Targets run
# interleaved, ROUNDS times, so a noisy machine's drift hits them alike; the table shows the
# median TPS of each and its ratio to direct. Everything listens on 127.0.0.1 on free ports and
# is stopped and removed on exit (scripts/lib.sh).
#
# Knobs (environment):
#   DURATION=10 CLIENTS=16 THREADS=2 ROUNDS=3   each pgbench -S run (-T/-c/-j), repeated ROUNDS times
#   LOGIN_DURATION=8 LOGIN_CLIENTS=8            the TLS logins/s runs
#   SCALE=10                                    pgbench -i -s
#   POOL_SIZE, PG_BINDIR, KEEP, ...: see scripts/lib.sh
#
# Numbers are only comparable within one run.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-16}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
LOGIN_DURATION=${LOGIN_DURATION:-8}
LOGIN_CLIENTS=${LOGIN_CLIENTS:-8}
SCALE=${SCALE:-10}
LOG_TAG=tls-load
# shellcheck source=scripts/lib.sh
. "$REPO/scripts/lib.sh"
lib_traps

# make_pki DIR: ca.crt, server.crt/server.key (localhost, 127.0.0.1), readable by the servers.
make_pki() {
  local d=$1
  mkdir -p "$d"
  (
    cd "$d"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key 2>/dev/null
    openssl req -x509 -new -key ca.key -sha256 -days 2 -subj "/CN=sluice bench CA" -out ca.crt 2>/dev/null
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out server.key 2>/dev/null
    openssl req -new -key server.key -subj "/CN=localhost" -out server.csr 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >ext.cnf
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -set_serial 1 -days 2 -sha256 \
      -extfile ext.cnf -out server.crt 2>/dev/null
  ) || die "openssl could not make the test certificates"
  chmod 600 "$d/server.key"
  if is_root; then chown -R postgres "$d"; fi
}

# enable_server_ssl DATADIR PORT
enable_server_ssl() {
  local dir=$1 port=$2
  as_pg 30 cp "$WORK/pki/server.crt" "$WORK/pki/server.key" "$dir/"
  psql_admin "$port" -c "ALTER SYSTEM SET ssl = on" -c "SELECT pg_reload_conf()" >/dev/null
  local i
  for i in $(seq 1 60); do
    [ "$(psql_admin "$port" -At -c 'SHOW ssl')" = on ] && return 0
    sleep 0.5
  done
  die "the server did not turn ssl on"
}

declare -A PORT
declare -A RUNS

# run_bench KIND TARGET: appends the TPS to RUNS[KIND,TARGET].
run_bench() {
  local kind=$1 target=$2 out="$WORK/runs/$1.$2.$(date +%s%N).log" args secs=$DURATION clients=$CLIENTS tps
  case "$kind" in
    select) args=(-S -M simple) ;;
    logins) args=(-C -f "$WORK/select1.sql") secs=$LOGIN_DURATION clients=$LOGIN_CLIENTS ;;
  esac
  PGSSLMODE=require PGPASSWORD=$BENCH_PASSWORD timeout $((secs + 120)) "$PG_BINDIR/pgbench" -n "${args[@]}" \
    -T "$secs" -c "$clients" -j "$THREADS" -h 127.0.0.1 -p "${PORT[$target]}" -U "$BENCH_USER" "$BENCH_DB" \
    >"$out" 2>&1 || log "pgbench $kind through $target failed: $(grep -m 1 -E 'ERROR|FATAL|error' "$out")"
  tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$out" | head -n 1)
  RUNS[$kind,$target]="${RUNS[$kind,$target]:-} ${tps:-0}"
  log "$(printf '%-7s %-10s tps=%s' "$kind" "$target" "${tps:-?}") load=$(cut -d' ' -f1-3 /proc/loadavg)"
}

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { if (NR) printf "%.1f", v[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 > 0) printf "%.2f", a / b; else printf "-" }'; }

main() {
  check_prerequisites initdb pg_ctl postgres psql pgbench
  command -v openssl >/dev/null || die "openssl is missing (apt-get install openssl)"
  make_work sluice-tls-load
  mkdir -p "$WORK/runs"
  build_release bin:sluice
  install_pgbouncer
  make_pki "$WORK/pki"
  pick_port && PORT[direct]=$PICKED
  init_primary "$WORK/primary" "${PORT[direct]}"
  enable_server_ssl "$WORK/primary" "${PORT[direct]}"
  create_bench_user "${PORT[direct]}"
  log "pgbench -i -s $SCALE"
  PGSSLMODE=require PGPASSWORD=$BENCH_PASSWORD timeout 600 "$PG_BINDIR/pgbench" -i -q -s "$SCALE" \
    -h 127.0.0.1 -p "${PORT[direct]}" -U "$BENCH_USER" "$BENCH_DB" >"$WORK/init.log" 2>&1 ||
    { tail -n 20 "$WORK/init.log" >&2; die "pgbench -i failed"; }
  echo "SELECT 1;" >"$WORK/select1.sql"

  pick_port && PORT[sluice]=$PICKED
  write_sluice_config "$WORK/sluice.toml" "${PORT[sluice]}" "${PORT[direct]}"
  printf '\n[client_tls]\nmode = "require"\ncert = "%s"\nkey = "%s"\n\n[server_tls]\nmode = "require"\n' \
    "$WORK/pki/server.crt" "$WORK/pki/server.key" >>"$WORK/sluice.toml"
  "$WORK/sluice" check-config "$WORK/sluice.toml" >&2 || die "sluice rejected its TLS config"
  PGSSLMODE=require start_sluice "$WORK/sluice.toml" "${PORT[sluice]}" "$WORK/sluice.log"

  local targets=(direct sluice)
  if command -v pgbouncer >/dev/null; then
    pick_port && PORT[pgbouncer]=$PICKED
    PGB_EXTRA="client_tls_sslmode = require
client_tls_cert_file = $WORK/pki/server.crt
client_tls_key_file = $WORK/pki/server.key
server_tls_sslmode = require" PGSSLMODE=require start_pgbouncer "${PORT[pgbouncer]}" "${PORT[direct]}"
    targets+=(pgbouncer)
  fi

  local r t kind
  for t in "${targets[@]}"; do run_bench select "$t" >/dev/null 2>&1; done # warm-up, unrecorded
  for t in "${targets[@]}"; do RUNS[select,$t]=""; done
  for r in $(seq 1 "$ROUNDS"); do
    for t in "${targets[@]}"; do run_bench select "$t"; done
  done
  for t in "${targets[@]}"; do run_bench logins "$t"; done

  echo
  echo "sluice TLS load comparison  $(date -u +%Y-%m-%dT%H:%MZ)  sluice $(sluice_version)"
  echo "PostgreSQL $("$PG_BINDIR/postgres" --version | awk '{print $3}') ssl=on, sslmode=require everywhere, pool size $POOL_SIZE (transaction), $(nproc) cores"
  echo "select: pgbench -S -M simple -T $DURATION -c $CLIENTS -j $THREADS, median of $ROUNDS interleaved rounds"
  echo "logins: pgbench -C -f 'SELECT 1' -T $LOGIN_DURATION -c $LOGIN_CLIENTS (TLS handshake + SCRAM per login)"
  echo
  printf '%-8s' test
  for t in "${targets[@]}"; do printf ' %12s' "$t"; done
  printf ' %16s' "sluice/direct"
  [ -n "${PORT[pgbouncer]:-}" ] && printf ' %16s %18s' "pgbouncer/direct" "sluice/pgbouncer"
  echo
  for kind in select logins; do
    declare -A M=()
    printf '%-8s' "$kind"
    for t in "${targets[@]}"; do
      M[$t]=$(echo "${RUNS[$kind,$t]:-}" | median)
      printf ' %12s' "${M[$t]}"
    done
    printf ' %16s' "$(ratio "${M[sluice]}" "${M[direct]}")"
    if [ -n "${PORT[pgbouncer]:-}" ]; then
      printf ' %16s %18s' "$(ratio "${M[pgbouncer]}" "${M[direct]}")" "$(ratio "${M[sluice]}" "${M[pgbouncer]}")"
    fi
    echo
    unset M
  done
}

main "$@"
