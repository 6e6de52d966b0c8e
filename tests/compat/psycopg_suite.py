"""psycopg 3 through sluice: placement, pipelines, executemany, COPY, server-side prepared
statements, two-phase commit, DEALLOCATE, encodings, LISTEN/NOTIFY."""

import psycopg
from psycopg import errors

from compat_common import URL, check, eventually, main, node

TIMEOUT = 30


def connect(**kw):
    kw.setdefault("autocommit", True)
    kw.setdefault("connect_timeout", 10)
    return psycopg.connect(URL, **kw)


def where(conn):
    return node(conn.execute("SELECT inet_server_port()").fetchone()[0])


def placement():
    with connect() as conn:
        eventually(lambda: where(conn) == "replica", "a read on a replica")
        row = conn.execute("INSERT INTO items (v) VALUES ('p') RETURNING inet_server_port()").fetchone()
        check(node(row[0]) == "primary", "INSERT ran on a replica")
        eventually(lambda: where(conn) == "replica", "reads back on replicas after the write")
        with conn.transaction():
            check(where(conn) == "primary", "a read-write transaction is on the primary")


def executemany_returning():
    with connect() as conn:
        cur = conn.cursor()
        params = [(f"em{i}", i) for i in range(200)]
        cur.executemany("INSERT INTO items (v, n) VALUES (%s, %s) RETURNING n, inet_server_port()", params, returning=True)
        got = []
        while True:
            row = cur.fetchone()
            check(row is not None, "a result set without its row")
            got.append(row)
            if not cur.nextset():
                break
        check([r[0] for r in got] == list(range(200)), f"executemany returned {len(got)} rows, not 0..199 in order")
        check(all(node(r[1]) == "primary" for r in got), "an executemany INSERT ran off the primary")


def copy():
    with connect() as conn:
        cur = conn.cursor()
        with cur.copy("COPY records (a, b, c) FROM STDIN") as cp:
            for i in range(5000):
                cp.write_row((i, f"r{i}", i / 2))
        n = conn.execute("/* sluice: primary */ SELECT count(*), sum(a) FROM records").fetchone()
        check(n == (5000, sum(range(5000))), f"COPY FROM wrote {n}")
        rows = []
        with cur.copy("COPY (SELECT a, b FROM records WHERE a < 10 ORDER BY a) TO STDOUT") as cp:
            for row in cp.rows():
                rows.append(row)
        check(rows == [(str(i), f"r{i}") for i in range(10)], f"COPY TO read {rows}")


def server_prepared():
    with connect(prepare_threshold=0) as conn:
        for i in range(50):
            row = conn.execute("SELECT %s::int * 2, inet_server_port()", (i,), prepare=True).fetchone()
            check(row[0] == i * 2, f"prepared statement returned {row}")
        eventually(
            lambda: node(conn.execute("SELECT inet_server_port() + %s", (0,), prepare=True).fetchone()[0]) == "replica",
            "a prepared read on a replica",
        )
        row = conn.execute("INSERT INTO items (v) VALUES (%s) RETURNING inet_server_port()", ("prep",), prepare=True).fetchone()
        check(node(row[0]) == "primary", "a prepared INSERT ran off the primary")


def tpc_recover():
    a = connect(autocommit=False)
    xid = a.xid(1, "sluice-gtrid", "sluice-bqual")
    a.tpc_begin(xid)
    a.execute("INSERT INTO items (v) VALUES ('tpc')")
    a.tpc_prepare()
    a.close()
    with connect(autocommit=False) as b:
        found = [x for x in b.tpc_recover() if x.gtrid == "sluice-gtrid"]
        check(len(found) == 1, f"tpc_recover() listed {b.tpc_recover()}")
        b.tpc_commit(found[0])
        check(not [x for x in b.tpc_recover() if x.gtrid == "sluice-gtrid"], "still prepared after commit")
    with connect() as conn:
        n = conn.execute("/* sluice: primary */ SELECT count(*) FROM items WHERE v = 'tpc'").fetchone()[0]
        check(n == 1, f"the committed prepared transaction left {n} rows")


def deallocate_auto_prepared():
    with connect(prepare_threshold=0) as conn:
        for _ in range(3):
            conn.execute("SELECT 1 + %s", (1,))
        names = list(conn._prepared._names.values())
        check(len(names) == 1, f"psycopg prepared {names}")
        name = names[0].decode()
        conn.execute(f"DEALLOCATE {name}", prepare=False)  # extended protocol, unnamed
        try:
            conn.execute(f"DEALLOCATE {name}", prepare=False)
            raise AssertionError("a second DEALLOCATE succeeded")
        except errors.InvalidSqlStatementName:
            pass
        conn._prepared.clear()
        check(conn.execute("SELECT 1 + %s", (2,)).fetchone()[0] == 3, "the statement after DEALLOCATE")
        for _ in range(3):
            conn.execute("SELECT 2 + %s", (1,))
        result = conn.pgconn.exec_(b"DEALLOCATE ALL")  # simple protocol
        check(result.status == psycopg.pq.ExecStatus.COMMAND_OK, f"DEALLOCATE ALL: {result.error_message}")
        conn._prepared.clear()
        check(conn.execute("SELECT 2 + %s", (2,)).fetchone()[0] == 4, "the statement after DEALLOCATE ALL")
    # psycopg's own eviction: past prepared_max it sends DEALLOCATE of the oldest statement
    # itself; every one must succeed and every statement keep answering right.
    with connect(prepare_threshold=0) as conn:
        conn.prepared_max = 2
        for round in range(3):
            for i in range(6):
                got = conn.execute(f"SELECT {i} + %s", (round,)).fetchone()[0]
                check(got == i + round, f"round {round}, statement {i}: {got}")
        check(len(conn._prepared._names) <= 2, f"psycopg keeps {len(conn._prepared._names)} prepared")


def encoding():
    with connect(client_encoding="utf-8") as conn:
        check(conn.info.encoding == "utf-8", f"conn.info.encoding = {conn.info.encoding}")
        reported = conn.info.parameter_status("client_encoding")
        check(reported in (b"UTF8", "UTF8"), f"client_encoding reported as {reported}")
        check(conn.execute("SELECT 'héllo ✓'").fetchone()[0] == "héllo ✓", "a UTF-8 round trip")
    with connect(client_encoding="latin1") as conn:
        reported = conn.info.parameter_status("client_encoding")
        check(reported in (b"LATIN1", "LATIN1"), f"client_encoding=latin1 reported as {reported}")
        check(conn.execute("SELECT 'héllo'").fetchone()[0] == "héllo", "a LATIN1 round trip")


def datestyle_option():
    import datetime

    with connect(options="-c DateStyle=iso") as conn:
        reported = conn.info.parameter_status("DateStyle")
        check(reported in (b"ISO, MDY", "ISO, MDY"), f"DateStyle reported as {reported}")
        d = conn.execute("SELECT '2024-02-29'::date").fetchone()[0]
        check(d == datetime.date(2024, 2, 29), f"date {d}")


def pipeline_10000():
    with connect() as conn:
        cursors = []
        with conn.pipeline():
            for i in range(10000):
                c = conn.cursor()
                if i % 1000 == 999:
                    c.execute("INSERT INTO items (v, n) VALUES ('pipe', %s) RETURNING n, inet_server_port()", (i,))
                else:
                    c.execute("SELECT %s::int, inet_server_port()", (i,))
                cursors.append(c)
        values = [c.fetchone() for c in cursors]
        check([v[0] for v in values] == list(range(10000)), "pipelined statements returned wrong values")
        writes = {node(v[1]) for i, v in enumerate(values) if i % 1000 == 999}
        check(writes == {"primary"}, f"pipelined writes ran on {writes}")
        # A fresh session that has written nothing: the pipeline's reads before its first write
        # run on a replica (the write then moves the rest to the primary: read-your-writes).
        reads = {node(v[1]) for v in values[:999]}
        check(reads == {"replica"}, f"pipelined reads before the first write ran on {reads}")
        n = conn.execute("/* sluice: primary */ SELECT count(*) FROM items WHERE v = 'pipe'").fetchone()[0]
        check(n == 10, f"{n} pipelined inserts committed, not 10")


def pipeline_error():
    with connect() as conn:
        conn.execute("DELETE FROM items WHERE v LIKE 'pe%'")
        try:
            with conn.pipeline() as p:
                conn.execute("INSERT INTO items (v) VALUES ('pe1')")
                conn.execute("INSERT INTO items (v) VALUES ('pe2')")
                p.sync()  # psycopg: what is synced before the error is committed
                conn.execute("SELECT 1 / 0")
                conn.execute("INSERT INTO items (v) VALUES ('pe3')")
            raise AssertionError("the failing statement raised nothing")
        except errors.DivisionByZero:
            pass
        n = conn.execute("/* sluice: primary */ SELECT array_agg(v ORDER BY v) FROM items WHERE v LIKE 'pe%'").fetchone()[0]
        check(n == ["pe1", "pe2"], f"after the pipeline error: {n}")
        check(conn.execute("SELECT 1").fetchone()[0] == 1, "the connection is usable")


def listen_notify():
    import threading

    with connect() as listener, connect() as sender:
        listener.execute("LISTEN sluice_ch")
        got = []

        def receive():
            for n in listener.notifies(timeout=TIMEOUT, stop_after=3):
                got.append(n.payload)

        t = threading.Thread(target=receive)
        t.start()
        for i in range(3):
            sender.execute(f"NOTIFY sluice_ch, 'm{i}'")
        t.join(TIMEOUT + 5)
        check(got == ["m0", "m1", "m2"], f"the listener got {got}")


def own_notify_pid():
    with connect() as conn:
        conn.execute("LISTEN own_ch")
        conn.execute("NOTIFY own_ch, 'me'")
        got = list(conn.notifies(timeout=10, stop_after=1))
        check(len(got) == 1, "no notification")
        check(got[0].pid == conn.info.backend_pid, f"pid {got[0].pid} != backend_pid {conn.info.backend_pid}")


def set_in_pipeline_transactions():
    """SETs inside transactions sent as whole pipelines: each lasts if its transaction commits
    (the Rust side checks that no session was pinned for them)."""
    with connect() as conn:
        want = None
        for i in range(1, 6):
            with conn.pipeline(), conn.transaction():
                conn.execute(f"SET work_mem = '{i}MB'")
                conn.execute("SELECT 1")
                if i == 3:
                    raise psycopg.Rollback()
            if i != 3:
                want = f"{i}MB"
            got = conn.execute("SHOW work_mem").fetchone()[0]
            check(got == want, f"round {i}: work_mem {got}, want {want}")


CASES = {f.__name__: f for f in [
    placement, executemany_returning, copy, server_prepared, tpc_recover, deallocate_auto_prepared, encoding,
    datestyle_option, pipeline_10000, pipeline_error, listen_notify, own_notify_pid, set_in_pipeline_transactions,
]}

if __name__ == "__main__":
    main(CASES)
