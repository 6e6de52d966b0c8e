"""asyncpg through sluice: placement, executemany, prepared statements, copy_records_to_table,
LISTEN with add_listener."""

import asyncio

import asyncpg

from compat_common import URL, check, main, node

TIMEOUT = 30


async def connect():
    return await asyncpg.connect(URL, timeout=10, statement_cache_size=100)


async def eventually(fn, what, timeout=10.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await fn():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}")


async def fetch_placement():
    conn = await connect()
    try:
        async def on_replica():
            return node(await conn.fetchval("SELECT inet_server_port()")) == "replica"

        await eventually(on_replica, "a read on a replica")
        port = await conn.fetchval("INSERT INTO items (v) VALUES ('a') RETURNING inet_server_port()")
        check(node(port) == "primary", "INSERT ran off the primary")
        rows = await conn.fetch("SELECT g FROM generate_series(1, 100) g")
        check([r["g"] for r in rows] == list(range(1, 101)), "fetch returned wrong rows")
    finally:
        await conn.close()


async def executemany():
    conn = await connect()
    try:
        await conn.executemany("INSERT INTO items (v, n) VALUES ($1, $2)", [(f"am{i}", i) for i in range(500)])
        n = await conn.fetchval("/* sluice: primary */ SELECT count(*) FROM items WHERE v LIKE 'am%'")
        check(n == 500, f"executemany inserted {n} rows")
    finally:
        await conn.close()


async def prepared():
    conn = await connect()
    try:
        stmt = await conn.prepare("SELECT $1::int + 1, inet_server_port()")
        for i in range(50):
            row = await stmt.fetchrow(i)
            check(row[0] == i + 1, f"prepared returned {row}")
        write = await conn.prepare("INSERT INTO items (v) VALUES ($1) RETURNING inet_server_port()")
        check(node(await write.fetchval("prep")) == "primary", "a prepared INSERT ran off the primary")
    finally:
        await conn.close()


async def copy_records_to_table():
    conn = await connect()
    try:
        # A fresh session that has written nothing: its introspection read may go to a replica.
        records = [(i, f"b{i}", i * 0.5) for i in range(10000)]
        await conn.copy_records_to_table("copy_target", records=records, columns=["a", "b", "c"])
        n = await conn.fetchval("/* sluice: primary */ SELECT count(*) FROM copy_target")
        check(n == 10000, f"copy_records_to_table left {n} rows on the primary")
    finally:
        await conn.close()


async def add_listener():
    listener, sender = await connect(), await connect()
    try:
        got = asyncio.Queue()
        await listener.add_listener("achan", lambda _c, _pid, _ch, payload: got.put_nowait(payload))
        for i in range(3):
            await sender.execute(f"NOTIFY achan, 'm{i}'")
        payloads = [await asyncio.wait_for(got.get(), TIMEOUT) for _ in range(3)]
        check(payloads == ["m0", "m1", "m2"], f"the listener got {payloads}")
    finally:
        await listener.close()
        await sender.close()


CASES = {
    f.__name__: (lambda f=f: asyncio.run(asyncio.wait_for(f(), 120)))
    for f in [fetch_placement, executemany, prepared, copy_records_to_table, add_listener]
}

if __name__ == "__main__":
    main(CASES)
