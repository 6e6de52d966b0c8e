"""Shared by the backend-kill cases: terminate every client backend of the test database on every
node (directly, not through sluice) while clients run through sluice, and judge what each client
connection saw.

The rule, per client connection (sluice keeps the client's session when its server connection
dies): at most MAX_ERRORS_PER_ROUND errors per kill round, each a PostgreSQL error the driver
surfaces with SQLSTATE 57P01 (or a class 08 connection failure sluice reports) on a connection
that stays open, never more failures in a row than that, never a hang, and the connection's last
statement succeeds.

Why two and not one: after a loss sluice makes every pooled connection that was idle answer a
lone Sync before reuse, but the kill is one statement signalling backends one after another; on
a loaded machine the killer can be descheduled between two signals, so a connection confirmed
alive is killed a moment later and the statement sent on it is lost too (a read already retried
once, or a COMMIT). One more error in that round is that race, not a session left broken: the
rounds wait until every client has answered again, and the answers are checked.
"""

import time
from urllib.parse import urlsplit, urlunsplit

import psycopg

from compat_common import PRIMARY, REPLICAS, URL

ROUNDS = 5
# One statement that takes longer than this is a hang (the driver side bounds every wait).
OP_TIMEOUT = 30.0
# Between rounds every client runs this many statements successfully (polled, bounded).
OPS_BETWEEN_ROUNDS = 3
ROUND_TIMEOUT = 60.0
# A bound on each client's loop; it normally ends when the rounds are over.
MAX_OPS = 100_000

TERMINATE_SQL = (
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
    "WHERE backend_type = 'client backend' AND datname = current_database() AND pid <> pg_backend_pid()"
)

EXPECTED_SQLSTATES = ("57P01",)

# See the module's text.
MAX_ERRORS_PER_ROUND = 2


class WrongAnswer(Exception):
    pass


class Writes:
    """One client's write transactions (each inserts its next seq into `kills`): which are known
    committed, which may be (their COMMIT failed), and the check of what the client reads back."""

    def __init__(self, name):
        self.name = name
        self.seq = 0
        self.confirmed = set()
        self.uncertain = set()

    def next(self):
        self.seq += 1
        return self.seq

    def check(self, seen, seq):
        """`seen`: the seqs the transaction inserting `seq` reads back, before its COMMIT."""
        if not (self.confirmed | {seq}) <= seen <= (self.confirmed | self.uncertain | {seq}):
            raise WrongAnswer(f"{self.name} sees {sorted(seen)}, wrote {sorted(self.confirmed)} "
                              f"(maybe {sorted(self.uncertain)}) and {seq}")
        self.confirmed, self.uncertain = seen - {seq}, set()

    def failed(self, seq):
        self.uncertain.add(seq)

    def committed(self, seq):
        self.confirmed.add(seq)


def check_table(clients):
    """What is on the primary after the run: every committed write of each client (one with
    `index` and `writes`), nothing never written."""
    with psycopg.connect(direct_url(PRIMARY), autocommit=True, connect_timeout=10) as conn:
        for c in clients:
            rows = conn.execute("SELECT coalesce(array_agg(seq), '{}') FROM kills WHERE worker = %s", (c.index,))
            seen = set(rows.fetchone()[0])
            w = c.writes
            if not w.confirmed <= seen <= w.confirmed | w.uncertain:
                lost = sorted(w.confirmed - seen)
                never = sorted(seen - w.confirmed - w.uncertain)
                raise AssertionError(f"{w.name}: committed but not on the primary {lost[:20]} ({len(lost)}), "
                                     f"on the primary but never written {never[:20]} ({len(never)}); "
                                     f"{len(w.confirmed)} committed, {len(w.uncertain)} maybe")


def expected_sqlstate(sqlstate):
    """What sluice may answer for a statement whose server connection was terminated."""
    return sqlstate is not None and (sqlstate in EXPECTED_SQLSTATES or sqlstate.startswith("08"))


def direct_url(port):
    """The test URL with sluice's port replaced by a node's: straight to PostgreSQL."""
    parts = urlsplit(URL)
    netloc = parts.netloc.rsplit(":", 1)[0] + f":{port}"
    return urlunsplit(parts._replace(netloc=netloc))


class Killer:
    """One direct connection per node; `round()` terminates every other client backend of the
    test database on each (sluice's server connections, not the monitor's: it uses `postgres`)."""

    def __init__(self):
        ports = [PRIMARY, *sorted(REPLICAS)]
        self.conns = [psycopg.connect(direct_url(p), autocommit=True, connect_timeout=10) for p in ports]
        self.started = []
        self.killed = []

    def round(self):
        self.started.append(time.monotonic())
        killed = sum(c.execute(TERMINATE_SQL).fetchone()[0] for c in self.conns)
        self.killed.append(killed)
        return killed

    def close(self):
        for c in self.conns:
            c.close()


class ConnLog:
    """What one client connection saw, in order: ("ok", t), ("error", t, text, good) or
    ("hung", t, what)."""

    def __init__(self, name):
        self.name = name
        self.seen = []

    def ok(self):
        self.seen.append(("ok", time.monotonic()))

    def error(self, text, good):
        self.seen.append(("error", time.monotonic(), text, good))

    def hung(self, what):
        self.seen.append(("hung", time.monotonic(), what))

    def oks_since(self, t):
        return sum(1 for s in self.seen if s[0] == "ok" and s[1] >= t)

    def errors(self):
        return [s for s in self.seen if s[0] != "ok"]

    def violation(self, rounds):
        """Why this connection's log breaks the rule, or None."""
        bad = [s for s in self.seen if s[0] == "hung" or (s[0] == "error" and not s[3])]
        if bad:
            return f"{bad[0][0]}: {bad[0][2]}"
        run = []
        for s in self.seen:
            run = [] if s[0] == "ok" else run + [s[2]]
            if len(run) > MAX_ERRORS_PER_ROUND:
                return f"{len(run)} failures in a row: {run}"
        if self.seen and self.seen[-1][0] != "ok":
            return f"the last statement failed: {self.seen[-1][2]}"
        per_round = [0] * len(rounds)
        for s in self.errors():
            before = [i for i, r in enumerate(rounds) if r <= s[1]]
            if not before:
                return f"an error before the first round: {s[2]}"
            per_round[before[-1]] += 1
        if any(n > MAX_ERRORS_PER_ROUND for n in per_round):
            return f"errors per round {per_round}: {[s[2] for s in self.errors()]}"
        return None


def judge(logs, killer):
    """Raise with every violation; return a one-line summary."""
    problems = [f"{log.name}: {v}" for log in logs if (v := log.violation(killer.started))]
    kinds = {}
    for log in logs:
        for s in log.errors():
            kind = s[2].split(" (")[0]
            kinds[kind] = kinds.get(kind, 0) + 1
    ops = sum(len(log.seen) for log in logs)
    summary = (
        f"{len(killer.started)} rounds killed {killer.killed} backends; {len(logs)} client connections "
        f"ran {ops} statements; errors seen: {kinds}"
    )
    print(summary, flush=True)
    if problems or not all(killer.killed):
        raise AssertionError(f"{summary}\n" + "\n".join(problems or ["a round killed nothing"]))
    return summary
