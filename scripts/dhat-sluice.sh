#!/usr/bin/env bash
# Run sluice under valgrind's DHAT (heap profile), for use as SLUICE_BIN of the other scripts:
#
#   cargo build --release
#   cp target/release/sluice target/sluice-dhat-bin
#   DHAT_BIN=$PWD/target/sluice-dhat-bin DHAT_OUT=$PWD/target/dhat.json \
#     SLUICE_BIN=scripts/dhat-sluice.sh NO_BUILD=1 MODE=idle IDLE_CLIENTS=1000 IDLE_HOLD=5 \
#     scripts/load.sh
#
# then open DHAT_OUT in valgrind's dh_view.html: "At t-gmax" shows what each allocation site
# holds while the clients are connected. DHAT_BIN and DHAT_OUT must be absolute: the scripts
# copy this file into their temporary directory. SIGTERM is passed on and waited for, so DHAT
# writes its file even when the caller stops waiting.
set -u
: "${DHAT_BIN:?absolute path of the sluice binary to profile}"
: "${DHAT_OUT:?absolute path of the DHAT output file}"
valgrind --tool=dhat --dhat-out-file="$DHAT_OUT" "$DHAT_BIN" "$@" &
child=$!
trap 'kill -TERM "$child"' TERM INT
wait "$child"
wait "$child"
