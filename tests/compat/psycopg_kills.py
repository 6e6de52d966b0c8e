"""psycopg 3 through sluice while every server backend is terminated, a few rounds: eight plain
connections in threads (reads, auto-prepared after five runs, and write transactions) and one
connection in pipeline mode. See kill_rounds.py for the rule each connection must keep."""

import random
import threading
import time

import psycopg

from compat_common import PRIMARY, URL, check, main, node
from kill_rounds import (
    MAX_OPS, OP_TIMEOUT, OPS_BETWEEN_ROUNDS, ROUND_TIMEOUT, ROUNDS, ConnLog, Killer, WrongAnswer, Writes, direct_url,
    check_table, expected_sqlstate, judge,
)

THREADS = 8
PIPELINE_READS = 10


class Worker(threading.Thread):
    """One connection through sluice, kept for the whole run, in a loop until told to stop."""

    def __init__(self, index, stop):
        super().__init__(daemon=True)
        self.index = index
        self.stop = stop
        self.log = ConnLog(f"connection {index}")
        self.since = None  # when the statement in flight started
        self.writes = Writes(f"worker {index}")
        self.crash = None
        self.conn = psycopg.connect(URL, autocommit=True, connect_timeout=10)

    def run(self):
        try:
            for i in range(MAX_OPS):
                if self.stop.is_set():
                    break
                self.since = time.monotonic()
                self.attempt(i)
                self.since = None
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            self.crash = e

    def attempt(self, i):
        """Step `i`, what it came to logged."""
        try:
            self.step(i)
            self.log.ok()
        except psycopg.Error as e:
            good = expected_sqlstate(e.sqlstate) and not self.conn.closed
            first = str(e).splitlines()[0] if str(e) else ""
            self.log.error(f"{e.sqlstate} {type(e).__name__}: {first}", good)
        except WrongAnswer as e:
            self.log.error(f"wrong answer: {e}", False)
        except IndexError as e:
            if not self.psycopg_lost_its_place(e):
                raise
            self.log.error("psycopg IndexError: an error at the pipeline's Sync", True)
            self.conn.close()
            self.conn = psycopg.connect(URL, autocommit=True, connect_timeout=10)

    def psycopg_lost_its_place(self, e):
        """psycopg 3 (3.3 here) raises IndexError, and leaves the connection unusable, when a
        pipeline's Sync is answered with an error after every statement's result: PostgreSQL
        does so when a deferred constraint fails at the implicit commit, sluice when the block's
        server connection is lost before its Sync (the write was not committed: an error is
        owed, and a bare ReadyForQuery would pass for the commit). Only the pipeline worker."""
        return False

    def step(self, i):
        if i % 4 == 3:
            self.write()
        else:
            v, port = self.conn.execute("SELECT %s::int, inet_server_port()", (i,)).fetchone()
            if v != i:
                raise WrongAnswer(f"SELECT {i} returned {v}")
            node(port)

    def write(self):
        seq = self.writes.next()
        try:
            with self.conn.transaction():
                self.conn.execute("INSERT INTO kills (worker, seq) VALUES (%s, %s)", (self.index, seq))
                rows = self.conn.execute(
                    "SELECT coalesce(array_agg(seq), '{}') FROM kills WHERE worker = %s", (self.index,)
                ).fetchone()[0]
                self.writes.check(set(rows), seq)
        except BaseException:
            self.writes.failed(seq)
            raise
        self.writes.committed(seq)


class PipelineWorker(Worker):
    """Each step: one pipeline of reads and one INSERT ... RETURNING, results checked after."""

    def psycopg_lost_its_place(self, e):
        return "empty deque" in str(e)

    def step(self, i):
        seq = self.writes.next()
        try:
            answers = run_pipeline(self.conn, self.index, i, seq)
        except BaseException:
            self.writes.failed(seq)
            raise
        self.writes.committed(seq)
        check_pipeline(i, seq, *answers)


def run_pipeline(conn, worker, i, seq):
    """Step `i` of a pipeline worker: PIPELINE_READS reads and one INSERT ... RETURNING of
    `seq` in one pipeline (one Sync), results fetched after: (the values read, the seq written)."""
    base = i * PIPELINE_READS
    with conn.pipeline():
        reads = [conn.execute("SELECT %s::int", (base + j,)) for j in range(PIPELINE_READS)]
        write = conn.execute("INSERT INTO kills (worker, seq) VALUES (%s, %s) RETURNING seq", (worker, seq))
    return [c.fetchone()[0] for c in reads], write.fetchone()[0]


def check_pipeline(i, seq, values, written):
    base = i * PIPELINE_READS
    if values != list(range(base, base + PIPELINE_READS)) or written != seq:
        raise WrongAnswer(f"pipeline {i} returned {values} and {written}")


def wait_for(workers, cond, what, timeout=ROUND_TIMEOUT):
    """Poll cond() (bounded), failing at once on a hung statement or a crashed thread."""
    deadline = time.monotonic() + timeout
    while not cond():
        now = time.monotonic()
        for w in workers:
            if w.crash is not None:
                raise AssertionError(f"{w.log.name} crashed: {w.crash!r}")
            since = w.since
            if since is not None and now - since > OP_TIMEOUT:
                raise AssertionError(f"{w.log.name}: a statement hung for {OP_TIMEOUT}s")
        if now > deadline:
            raise AssertionError(f"never within {timeout}s: {what}")
        time.sleep(0.02)


def stop_all(stop, workers, killer):
    """Stop the workers (bounded) and the killer; a worker still running is a hang."""
    stop.set()
    for w in workers:
        w.join(OP_TIMEOUT + 5)
    killer.close()
    check(not any(w.is_alive() for w in workers), "a client did not stop (a hang)")


def backend_kills():
    with psycopg.connect(direct_url(PRIMARY), autocommit=True, connect_timeout=10) as conn:
        conn.execute("DELETE FROM kills")
    stop = threading.Event()
    killer = Killer()
    workers = [Worker(i, stop) for i in range(THREADS)] + [PipelineWorker(THREADS, stop)]
    try:
        for w in workers:
            w.start()
        wait_for(workers, lambda: all(w.log.oks_since(0) >= OPS_BETWEEN_ROUNDS for w in workers), "every client warm")
        for r in range(ROUNDS):
            killer.round()
            after = time.monotonic()
            wait_for(workers, lambda: all(w.log.oks_since(after) >= OPS_BETWEEN_ROUNDS for w in workers),
                     f"every client answering again after round {r}")
    finally:
        stop_all(stop, workers, killer)
    judge([w.log for w in workers], killer)
    check(sum(len(w.writes.confirmed) for w in workers) > 0, "no write committed")
    check_table(workers)
    for w in workers:
        check(w.conn.execute("SELECT 1").fetchone()[0] == 1, f"{w.log.name} is not usable after the rounds")
        w.conn.close()


STORM_SECONDS = 10.0
STORM_PIPELINES = 2


class StormPipeline(Worker):
    """A pipeline of reads and one INSERT ... RETURNING per step, as fast as it can, while
    backends die every few milliseconds: every error is allowed; a row returned without an
    error must be on the primary afterwards, and no step may hang."""

    def __init__(self, index, stop):
        super().__init__(index, stop)
        self.steps = 0

    def attempt(self, i):
        self.step(i)

    def step(self, i):
        seq = self.writes.next()
        try:
            answers = run_pipeline(self.conn, self.index, i, seq)
        except (psycopg.Error, IndexError) as e:
            self.writes.failed(seq)
            if isinstance(e, IndexError) or self.conn.closed:
                # psycopg's IndexError leaves its connection unusable (see Worker).
                self.conn.close()
                self.conn = psycopg.connect(URL, autocommit=True, connect_timeout=10)
            return
        self.writes.committed(seq)
        self.steps += 1
        check_pipeline(i, seq, *answers)


def pipeline_storm():
    """Backends killed every 5-100 ms for STORM_SECONDS under psycopg pipelines: no write
    acknowledged and lost (a pipeline's INSERT whose Sync was answered without its commit)."""
    with psycopg.connect(direct_url(PRIMARY), autocommit=True, connect_timeout=10) as conn:
        conn.execute("DELETE FROM kills")
    stop = threading.Event()
    killer = Killer()
    workers = [StormPipeline(100 + i, stop) for i in range(STORM_PIPELINES)]
    rng = random.Random(13)
    try:
        for w in workers:
            w.start()
        end = time.monotonic() + STORM_SECONDS
        while time.monotonic() < end:
            time.sleep(rng.uniform(0.005, 0.1))
            killer.round()
            now = time.monotonic()
            for w in workers:
                check(w.crash is None, f"{w.writes.name} crashed: {w.crash!r}")
                since = w.since
                check(since is None or now - since < OP_TIMEOUT, f"{w.writes.name}: a pipeline hung")
    finally:
        stop_all(stop, workers, killer)
    for w in workers:
        check(w.crash is None, f"{w.writes.name} crashed: {w.crash!r}")
    check(sum(w.steps for w in workers) > 0, "no pipeline succeeded")
    print(f"{len(killer.started)} kill rounds; pipelines that succeeded: {[w.steps for w in workers]}", flush=True)
    check_table(workers)


CASES = {f.__name__: f for f in [backend_kills, pipeline_storm]}

if __name__ == "__main__":
    main(CASES)
