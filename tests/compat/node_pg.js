// node-postgres through sluice: a pool, named prepared statements, notifications.
// Runs the cases named on the command line; prints `ok <case>` / `FAIL <case>: <why>`.

const { Client, Pool } = require('pg');
const { runCases } = require('./node_common');

const URL = process.env.SLUICE_URL;
const PRIMARY = Number(process.env.SLUICE_PRIMARY_PORT);
const REPLICAS = new Set(process.env.SLUICE_REPLICA_PORTS.split(',').filter(Boolean).map(Number));
const TIMEOUT_MS = 30000;

function node(port) {
  port = Number(port);
  if (port === PRIMARY) return 'primary';
  if (REPLICAS.has(port)) return 'replica';
  throw new Error(`port ${port} is no node of the cluster`);
}

function check(cond, msg) {
  if (!cond) throw new Error(msg);
}

async function eventually(fn, what, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await fn()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`never: ${what}`);
}

async function pool() {
  const p = new Pool({ connectionString: URL, max: 8 });
  try {
    const reads = await Promise.all(
      Array.from({ length: 40 }, (_, i) => p.query('SELECT $1::int AS i, inet_server_port() AS port', [i])),
    );
    reads.forEach((r, i) => check(r.rows[0].i === i, `read ${i} returned ${r.rows[0].i}`));
    await eventually(async () => node((await p.query('SELECT inet_server_port() AS port')).rows[0].port) === 'replica',
      'a pooled read on a replica');
    const writes = await Promise.all(
      Array.from({ length: 20 }, (_, i) => p.query("INSERT INTO items (v, n) VALUES ('np', $1) RETURNING inet_server_port() AS port", [i])),
    );
    writes.forEach((w) => check(node(w.rows[0].port) === 'primary', 'a pooled INSERT ran off the primary'));
    const client = await p.connect();
    try {
      await client.query('BEGIN');
      const r = await client.query("SELECT count(*)::int AS n, inet_server_port() AS port FROM items WHERE v = 'np'");
      await client.query('COMMIT');
      check(r.rows[0].n === 20 && node(r.rows[0].port) === 'primary', `in a transaction: ${JSON.stringify(r.rows[0])}`);
    } finally {
      client.release();
    }
  } finally {
    await p.end();
  }
}

async function named_prepared() {
  const c = new Client({ connectionString: URL });
  await c.connect();
  try {
    for (let i = 0; i < 30; i++) {
      const r = await c.query({ name: 'double', text: 'SELECT $1::int * 2 AS d, inet_server_port() AS port', values: [i] });
      check(r.rows[0].d === i * 2, `named statement returned ${r.rows[0].d}`);
    }
    const w = await c.query({ name: 'ins', text: "INSERT INTO items (v) VALUES ($1) RETURNING inet_server_port() AS port", values: ['nodeprep'] });
    check(node(w.rows[0].port) === 'primary', 'a named INSERT ran off the primary');
    await eventually(async () => node((await c.query({ name: 'port', text: 'SELECT inet_server_port() AS port' })).rows[0].port) === 'replica',
      'a named read on a replica');
  } finally {
    await c.end();
  }
}

async function notifications() {
  const listener = new Client({ connectionString: URL });
  const sender = new Client({ connectionString: URL });
  await listener.connect();
  await sender.connect();
  try {
    const got = [];
    const done = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the listener got ${JSON.stringify(got)}`)), TIMEOUT_MS);
      listener.on('notification', (msg) => {
        got.push(msg.payload);
        if (got.length === 3) { clearTimeout(timer); resolve(); }
      });
    });
    await listener.query('LISTEN nchan');
    for (let i = 0; i < 3; i++) await sender.query(`NOTIFY nchan, 'm${i}'`);
    await done;
    check(JSON.stringify(got) === JSON.stringify(['m0', 'm1', 'm2']), `got ${JSON.stringify(got)}`);
  } finally {
    await listener.end();
    await sender.end();
  }
}

runCases({ pool, named_prepared, notifications });
