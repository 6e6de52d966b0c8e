"""Shared by the Python compatibility scripts: where sluice and the nodes are, and a case runner.

Each script defines cases as functions; `main(CASES)` runs the ones named on the command line,
prints `ok <case>` or `FAIL <case>: <why>` for each, and exits 1 if any failed.
"""

import os
import sys
import time
import traceback

URL = os.environ["SLUICE_URL"]
PRIMARY = int(os.environ["SLUICE_PRIMARY_PORT"])
REPLICAS = {int(p) for p in os.environ["SLUICE_REPLICA_PORTS"].split(",") if p}


def node(port):
    """'primary', 'replica' or an error for a port a statement reported."""
    if port == PRIMARY:
        return "primary"
    if port in REPLICAS:
        return "replica"
    raise AssertionError(f"port {port} is no node of the cluster")


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def eventually(fn, what, timeout=10.0):
    """Call fn until it returns true (bounded): read-your-writes keeps a session's reads on the
    primary until a replica has replayed its last write."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return
        time.sleep(0.05)
    raise AssertionError(f"never: {what}")


def main(cases):
    names = sys.argv[1:] or list(cases)
    failed = 0
    for name in names:
        try:
            cases[name]()
            print(f"ok {name}", flush=True)
        except Exception as e:  # noqa: BLE001 - every failure is reported, then the next case runs
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
            traceback.print_exc()
    sys.exit(1 if failed else 0)
