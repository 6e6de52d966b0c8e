"""asyncpg through sluice while every server backend is terminated, a few rounds: a pool of eight
connections shared by eight tasks (reads with asyncpg's usual prepared statements, and write
transactions). See kill_rounds.py for the rule.

Two judgements of the same run. `backend_kills`: what a pool's user sees, per task (at most two
errors per round, a 57P01 or a connection error asyncpg reports, the pool's next connection
works). `backend_kills_sessions_kept`: the rule per client connection (told apart by the pid
sluice gave it), which also requires that sluice keeps every session, so the pool never
replaces a connection."""

import asyncio

import asyncpg
import psycopg

from compat_common import PRIMARY, URL, check, main, node
from kill_rounds import (
    MAX_OPS, OP_TIMEOUT, OPS_BETWEEN_ROUNDS, ROUND_TIMEOUT, ROUNDS, ConnLog, Killer, WrongAnswer, Writes, direct_url,
    check_table, expected_sqlstate, judge,
)

POOL = 8


class Run:
    """The pool, one log per client connection (by its pid) and one write record per task."""

    def __init__(self, pool):
        self.pool = pool
        self.logs = {}
        self.stop = False
        self.hung = None
        self.errors = []  # raised outside a statement (acquire, release)

    def log(self, pid):
        return self.logs.setdefault(pid, ConnLog(f"connection pid {pid}"))


class Task:
    def __init__(self, index, run):
        self.index = index
        self.run = run
        self.writes = Writes(f"task {index}")
        self.oks = []  # when each successful statement ended
        self.log = ConnLog(f"task {index}")

    async def loop(self):
        loop = asyncio.get_running_loop()
        for i in range(MAX_OPS):
            if self.run.stop:
                return
            try:
                ok = await asyncio.wait_for(self.one(i), OP_TIMEOUT)
            except asyncio.TimeoutError:
                self.run.hung = f"task {self.index}: statement {i} hung for {OP_TIMEOUT}s"
                return
            except Exception as e:  # noqa: BLE001 - anything else asyncpg raised is a failure
                self.run.errors.append(f"task {self.index}, statement {i}: {type(e).__name__}: {e}")
                self.log.error(f"{type(e).__name__}: {e}", False)
                continue
            if ok:
                self.oks.append(loop.time())

    async def one(self, i):
        """One statement on a pooled connection, logged for the task and for the connection;
        true if it succeeded."""
        logs = [self.log]
        failure = None
        try:
            async with self.run.pool.acquire() as conn:
                logs.append(self.run.log(conn.get_server_pid()))
                await (self.write(conn) if i % 4 == 3 else self.read(conn, i))
        except asyncpg.PostgresError as e:
            # 57P01 from sluice, or a connection asyncpg saw closed (08003): both may be told.
            failure = (f"{e.sqlstate} {type(e).__name__}: {e}", expected_sqlstate(e.sqlstate))
        except asyncpg.InterfaceError as e:
            closed = "connection is closed" in str(e) or "released back to the pool" in str(e)
            failure = (f"{type(e).__name__}: {e}", closed)
        except WrongAnswer as e:
            failure = (f"wrong answer: {e}", False)
        for log in logs:
            if failure:
                log.error(*failure)
            else:
                log.ok()
        return failure is None

    async def read(self, conn, i):
        v, port = await conn.fetchrow("SELECT $1::int, inet_server_port()", i)
        if v != i:
            raise WrongAnswer(f"SELECT {i} returned {v}")
        node(port)

    async def write(self, conn):
        seq = self.writes.next()
        try:
            async with conn.transaction():
                await conn.execute("INSERT INTO kills (worker, seq) VALUES ($1, $2)", self.index, seq)
                seen = set(await conn.fetchval("SELECT coalesce(array_agg(seq), '{}') FROM kills WHERE worker = $1", self.index))
                self.writes.check(seen, seq)
        except BaseException:
            self.writes.failed(seq)
            raise
        self.writes.committed(seq)


async def wait_for(run, cond, what):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ROUND_TIMEOUT
    while not cond():
        if run.hung:
            raise AssertionError(run.hung)
        if loop.time() > deadline:
            raise AssertionError(f"never within {ROUND_TIMEOUT}s: {what}")
        await asyncio.sleep(0.02)


async def backend_kills(sessions_kept):
    with psycopg.connect(direct_url(PRIMARY), autocommit=True, connect_timeout=10) as conn:
        conn.execute("DELETE FROM kills")
    killer = await asyncio.to_thread(Killer)
    pool = await asyncpg.create_pool(URL, min_size=POOL, max_size=POOL, timeout=10, command_timeout=OP_TIMEOUT)
    run = Run(pool)
    tasks = [Task(i, run) for i in range(POOL)]
    loop = asyncio.get_running_loop()
    running = [asyncio.create_task(t.loop()) for t in tasks]
    try:
        def answered_since(t0):
            return all(sum(1 for t in task.oks if t >= t0) >= OPS_BETWEEN_ROUNDS for task in tasks)

        await wait_for(run, lambda: answered_since(0), "every task warm")
        for r in range(ROUNDS):
            await asyncio.to_thread(killer.round)
            after = loop.time()
            await wait_for(run, lambda: answered_since(after), f"every task answering again after round {r}")
    finally:
        run.stop = True
        await asyncio.wait_for(asyncio.gather(*running), OP_TIMEOUT + 5)
        await asyncio.to_thread(killer.close)
    check(run.hung is None, run.hung)
    # Every pooled connection still answers (its last statement in the log).
    held = [await pool.acquire() for _ in range(POOL)]
    for conn in held:
        check(await conn.fetchval("SELECT 1") == 1, "a pooled connection is not usable after the rounds")
        run.log(conn.get_server_pid()).ok()
    for conn in held:
        await pool.release(conn)
    await pool.close()
    for e in run.errors:
        print(e, flush=True)
    print(f"client connections seen: {len(run.logs)} (a pool of {POOL})", flush=True)
    if sessions_kept:
        judge(list(run.logs.values()), killer)
        check(len(run.logs) == POOL, f"the pool replaced connections: {len(run.logs)} seen, not {POOL}")
    else:
        judge([t.log for t in tasks], killer)
    check(not run.errors, f"{len(run.errors)} unexpected errors, the first: {run.errors[:1]}")
    check(sum(len(t.writes.confirmed) for t in tasks) > 0, "no write committed")
    check_table(tasks)


CASES = {
    "backend_kills": lambda: asyncio.run(asyncio.wait_for(backend_kills(False), 110)),
    "backend_kills_sessions_kept": lambda: asyncio.run(asyncio.wait_for(backend_kills(True), 110)),
}


if __name__ == "__main__":
    main(CASES)
