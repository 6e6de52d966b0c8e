// node-postgres through sluice while every server backend is terminated, five rounds: a pg.Pool of
// eight clients shared by eight async loops (parameterised reads, write transactions in the usual
// BEGIN / COMMIT, ROLLBACK on error). The rule per client connection (told apart by the pid sluice
// gave it) is kill_rounds.py's: at most two errors per round, SQLSTATE 57P01 (or class 08), never
// three in a row, the last statement succeeds, no hang, no wrong answer; and sluice keeps every
// session, so the pool never replaces a client. Prints `ok <case>` / `FAIL <case>: <why>`.

const { Client, Pool } = require('pg');
const { runCases } = require('./node_common');

const URL = process.env.SLUICE_URL;
const PRIMARY = Number(process.env.SLUICE_PRIMARY_PORT);
const REPLICAS = process.env.SLUICE_REPLICA_PORTS.split(',').filter(Boolean).map(Number);
const TASKS = 8;
const ROUNDS = 5;
const OP_TIMEOUT_MS = 30000;
const OPS_BETWEEN_ROUNDS = 3;
const ROUND_TIMEOUT_MS = 60000;
const MAX_OPS = 100000;
// kill_rounds.py says why a round may cost a client two errors.
const MAX_ERRORS_PER_ROUND = 2;
const TERMINATE_SQL = "SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity "
  + "WHERE backend_type = 'client backend' AND datname = current_database() AND pid <> pg_backend_pid()";

function check(cond, msg) {
  if (!cond) throw new Error(msg);
}

function directUrl(port) {
  const u = new globalThis.URL(URL);
  u.port = String(port);
  return u.toString();
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

class ConnLog {
  constructor(name) { this.name = name; this.seen = []; }
  ok() { this.seen.push({ ok: true, at: performance.now() }); }
  error(text, good) { this.seen.push({ ok: false, at: performance.now(), text, good }); }

  violation(rounds) {
    const bad = this.seen.find((s) => !s.ok && !s.good);
    if (bad) return `error: ${bad.text}`;
    let run = [];
    for (const s of this.seen) {
      run = s.ok ? [] : [...run, s.text];
      if (run.length > MAX_ERRORS_PER_ROUND) return `${run.length} failures in a row: ${JSON.stringify(run)}`;
    }
    const last = this.seen[this.seen.length - 1];
    if (last && !last.ok) return `the last statement failed: ${last.text}`;
    const perRound = rounds.map(() => 0);
    for (const s of this.seen.filter((x) => !x.ok)) {
      const r = rounds.filter((t) => t <= s.at).length - 1;
      if (r < 0) return `an error before the first round: ${s.text}`;
      perRound[r] += 1;
    }
    if (perRound.some((n) => n > MAX_ERRORS_PER_ROUND)) return `errors per round ${JSON.stringify(perRound)}`;
    return null;
  }
}

async function backend_kills() {
  const direct = await Promise.all([PRIMARY, ...REPLICAS].map(async (port) => {
    const c = new Client({ connectionString: directUrl(port), connectionTimeoutMillis: 10000 });
    await c.connect();
    return c;
  }));
  await direct[0].query('DELETE FROM kills');
  const pool = new Pool({
    connectionString: URL, max: TASKS, idleTimeoutMillis: 0, connectionTimeoutMillis: 10000, query_timeout: OP_TIMEOUT_MS,
  });
  const poolErrors = [];
  pool.on('error', (e) => poolErrors.push(`an idle client failed: ${e.message}`));
  const logs = new Map();
  const logOf = (pid) => { if (!logs.has(pid)) logs.set(pid, new ConnLog(`connection pid ${pid}`)); return logs.get(pid); };
  const rounds = [];
  const killed = [];
  let stop = false;
  const tasks = Array.from({ length: TASKS }, (_, index) => ({ index, seq: 0, confirmed: new Set(), uncertain: new Set(), oks: [] }));

  async function read(client, i) {
    const r = await client.query('SELECT $1::int AS v, inet_server_port() AS port', [i]);
    check(r.rows[0].v === i, `wrong answer: SELECT ${i} returned ${r.rows[0].v}`);
  }

  async function write(client, t) {
    t.seq += 1;
    const seq = t.seq;
    try {
      await client.query('BEGIN');
      try {
        await client.query('INSERT INTO kills (worker, seq) VALUES ($1, $2)', [t.index, seq]);
        const r = await client.query("SELECT coalesce(array_agg(seq), '{}') AS s FROM kills WHERE worker = $1", [t.index]);
        const seen = new Set(r.rows[0].s);
        const low = [...t.confirmed, seq].every((x) => seen.has(x));
        const high = [...seen].every((x) => x === seq || t.confirmed.has(x) || t.uncertain.has(x));
        check(low && high, `wrong answer: task ${t.index} sees ${[...seen]}, wrote ${[...t.confirmed]} and ${seq}`);
        await client.query('COMMIT');
        seen.delete(seq);
        t.confirmed = seen;
        t.uncertain = new Set();
      } catch (e) {
        await client.query('ROLLBACK').catch(() => {});
        throw e;
      }
    } catch (e) {
      t.uncertain.add(seq);
      throw e;
    }
    t.confirmed.add(seq);
  }

  async function loop(t) {
    for (let i = 0; i < MAX_OPS && !stop; i++) {
      const client = await pool.connect();
      const log = logOf(client.processID);
      try {
        await (i % 4 === 3 ? write(client, t) : read(client, i));
        log.ok();
        t.oks.push(performance.now());
      } catch (e) {
        const good = Boolean(e.code) && (e.code === '57P01' || e.code.startsWith('08'));
        log.error(`${e.code || 'no SQLSTATE'} ${e.message}`, good);
        if (String(e.message).includes('timeout')) { client.release(e); throw e; }
      }
      client.release();
    }
  }

  async function waitFor(cond, what) {
    const deadline = performance.now() + ROUND_TIMEOUT_MS;
    while (!cond()) {
      check(performance.now() < deadline, `never within ${ROUND_TIMEOUT_MS} ms: ${what}`);
      await sleep(20);
    }
  }
  const answeredSince = (t0) => tasks.every((t) => t.oks.filter((x) => x >= t0).length >= OPS_BETWEEN_ROUNDS);

  const running = tasks.map((t) => loop(t));
  let failedLoop = null;
  running.forEach((p) => p.catch((e) => { failedLoop = failedLoop || e; }));
  try {
    await waitFor(() => failedLoop || answeredSince(0), 'every task warm');
    for (let r = 0; r < ROUNDS && !failedLoop; r++) {
      rounds.push(performance.now());
      const counts = await Promise.all(direct.map((c) => c.query(TERMINATE_SQL)));
      killed.push(counts.reduce((n, res) => n + res.rows[0].n, 0));
      const after = performance.now();
      await waitFor(() => failedLoop || answeredSince(after), `every task answering again after round ${r}`);
    }
  } finally {
    stop = true;
    await Promise.allSettled(running);
  }
  check(!failedLoop, `a task stopped: ${failedLoop}`);
  const problems = [...logs.values()].map((l) => [l.name, l.violation(rounds)]).filter(([, v]) => v).map(([n, v]) => `${n}: ${v}`);
  const kinds = {};
  for (const l of logs.values()) for (const s of l.seen) if (!s.ok) { const k = s.text.split(' (')[0]; kinds[k] = (kinds[k] || 0) + 1; }
  const ops = [...logs.values()].reduce((n, l) => n + l.seen.length, 0);
  const summary = `${rounds.length} rounds killed ${JSON.stringify(killed)} backends; ${logs.size} client connections `
    + `(a pool of ${TASKS}) ran ${ops} statements; errors seen: ${JSON.stringify(kinds)}`;
  console.log(summary);
  check(killed.every((n) => n > 0), `a round killed nothing: ${summary}`);
  check(problems.length === 0 && poolErrors.length === 0, `${summary}\n${[...problems, ...poolErrors].join('\n')}`);
  check(logs.size === TASKS, `the pool replaced clients: ${logs.size} seen, not ${TASKS}`);
  for (const t of tasks) {
    const r = await direct[0].query("SELECT coalesce(array_agg(seq), '{}') AS s FROM kills WHERE worker = $1", [t.index]);
    const seen = new Set(r.rows[0].s);
    check([...t.confirmed].every((x) => seen.has(x)) && [...seen].every((x) => t.confirmed.has(x) || t.uncertain.has(x)),
      `task ${t.index}: the primary has ${[...seen]}, committed ${[...t.confirmed]}, maybe ${[...t.uncertain]}`);
  }
  check(tasks.some((t) => t.confirmed.size > 0), 'no write committed');
  await pool.end();
  await Promise.all(direct.map((c) => c.end()));
}

runCases({ backend_kills });
