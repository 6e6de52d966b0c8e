//! Table-driven tests of [`classify`] (every rule), and property tests: classification never
//! panics, and whitespace or comments around a statement do not change it.

use proptest::prelude::*;

use super::*;

use Access::{Read as R, Write as W};

const NO_TX: TxEffect = TxEffect::None;
const BEGIN_RW: TxEffect = TxEffect::Begin { read_only: false };
const BEGIN_RO: TxEffect = TxEffect::Begin { read_only: true };
const END: TxEffect = TxEffect::End;
const SET_RO: TxEffect = TxEffect::SetReadOnly;
const NONE: SessionEffect = SessionEffect::None;
const PARAM: SessionEffect = SessionEffect::Parameter;
const PIN: SessionEffect = SessionEffect::Pin;

/// (sql, access, reason, tx effect, session effect)
type Case = (&'static str, Access, Reason, TxEffect, SessionEffect);

/// Plain reads, proven without the parser or with it.
const READS: &[Case] = &[
    ("SELECT 1", R, Reason::PureRead, NO_TX, NONE),
    ("select * from t where id = $1", R, Reason::PureRead, NO_TX, NONE),
    ("SeLeCt a, b FrOm t", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT count(*), sum(x), avg(x) FROM t GROUP BY y", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT now(), coalesce(a, b), lower(c) FROM t", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT * FROM generate_series(1, 10)", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT random(), clock_timestamp(), gen_random_uuid()", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT pg_sleep(0.1)", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT inet_server_port(), inet_server_addr()", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT current_setting('work_mem'), version()", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT pg_last_wal_replay_lsn()", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT pg_catalog.count(*) FROM t", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT x::numeric(10, 2), CAST(y AS varchar(3)) FROM t", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT x::pg_catalog.numeric(10,2) FROM t", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT 'a'::character varying(10)", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT * FROM t WHERE id IN (1, 2, 3)", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT * FROM t WHERE EXISTS (SELECT 1 FROM u)", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT * FROM t WHERE x = ANY (ARRAY[1,2])", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT row_number() OVER (PARTITION BY a ORDER BY b) FROM t", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT count(*) FILTER (WHERE x > 1) FROM t", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x) FROM t", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT DISTINCT ON (a) a, b FROM t ORDER BY a, b", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT * FROM a JOIN b USING (id) LEFT JOIN c ON (c.id = a.id)", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT left(name, 3), right(name, 2) FROM t", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT * FROM t TABLESAMPLE SYSTEM (10)", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT * FROM t TABLESAMPLE BERNOULLI (5) REPEATABLE (42)", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT * FROM (SELECT 1) AS s(a)", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT * FROM (SELECT 1) s(a)", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT * FROM generate_series(1,3) WITH ORDINALITY AS g(v, n)", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT a FROM generate_series(1, 3) g(a)", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT a FROM t x(a, b)", R, Reason::ParsedRead, NO_TX, NONE),
    ("WITH x(a) AS (SELECT 1) SELECT a FROM x", R, Reason::ParsedRead, NO_TX, NONE),
    ("WITH x AS (SELECT 1) SELECT * FROM x", R, Reason::PureRead, NO_TX, NONE),
    (
        "WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r",
        R,
        Reason::PureRead,
        NO_TX,
        NONE,
    ),
    ("WITH x AS MATERIALIZED (SELECT 1) SELECT * FROM x", R, Reason::PureRead, NO_TX, NONE),
    ("WITH x AS NOT MATERIALIZED (SELECT 1) SELECT * FROM x", R, Reason::PureRead, NO_TX, NONE),
    ("TABLE t", R, Reason::PureRead, NO_TX, NONE),
    ("TABLE ONLY public.t", R, Reason::PureRead, NO_TX, NONE),
    ("VALUES (1), (2)", R, Reason::PureRead, NO_TX, NONE),
    ("VALUES (1, 'a') ORDER BY 1", R, Reason::PureRead, NO_TX, NONE),
    ("(SELECT 1) UNION (SELECT 2)", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT 1 UNION ALL SELECT 2 EXCEPT SELECT 3", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT t.update, t.insert, t.into FROM t", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT \"update\", \"Insert\" FROM t", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT \"Insert\" FROM \"Delete\"", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT insert_at, updated_by FROM t", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT substring(s FROM 1 FOR 3) FROM t", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT extract(epoch FROM now())", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT jsonb_build_object('a', 1), jsonb_insert('{}', '{a}', '1')", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT current_user, current_timestamp, session_user", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT a FROM t ORDER BY (a)", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT * FROM t WHERE NOT (a AND b)", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT CASE WHEN (a) THEN (b) ELSE (c) END FROM t", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT * FROM t LIMIT (5) OFFSET (1)", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT 1.5e3, .5, 1e-3", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT * FROM t, LATERAL (SELECT 1) l", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT * FROM t WHERE (a, b) = (1, 2)", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT $1::int, $2", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT héllo FROM t", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT 1 WHERE 'x' = ANY (SELECT 'y')", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT pg_catalog.pg_table_is_visible(1)", R, Reason::PureRead, NO_TX, NONE),
    // What ORMs, drivers and tools send.
    ("SELECT \"users\".* FROM \"users\" WHERE \"users\".\"id\" = $1 LIMIT $2", R, Reason::PureRead, NO_TX, NONE),
    ("select u1_0.id,u1_0.name from users u1_0 where u1_0.id=?", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT abalance FROM pgbench_accounts WHERE aid = 42", R, Reason::PureRead, NO_TX, NONE),
    (
        "SELECT c.oid, n.nspname, c.relname FROM pg_catalog.pg_class c \
         LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relname OPERATOR(pg_catalog.~) '^(t)$' COLLATE pg_catalog.default \
         AND pg_catalog.pg_table_is_visible(c.oid) ORDER BY 2, 3",
        R,
        Reason::ParsedRead,
        NO_TX,
        NONE,
    ),
    ("SELECT EXISTS(SELECT 1 FROM t WHERE id = $1)", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT ARRAY(SELECT id FROM t), ROW(1, 2), (SELECT count(*) FROM t) AS c", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT date_trunc('day', ts) AS d, count(*) FROM events GROUP BY 1", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT * FROM t WHERE to_tsvector('english', body) @@ plainto_tsquery($1)", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT pg_size_pretty(pg_database_size(current_database()))", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT * FROM json_populate_recordset(null::t, $1)", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT a FROM t WHERE b = ANY($1::int[]) AND c ILIKE $2", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT string_agg(DISTINCT x, ',' ORDER BY x) FROM t", R, Reason::PureRead, NO_TX, NONE),
    // sqlparser rejects these, but the lexical pass proves them reads without it.
    ("SELECT * FROM t *", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT a FROM t GROUP BY DISTINCT a", R, Reason::PureRead, NO_TX, NONE),
    // ROLLUP is an unreserved keyword that could name a user function: only the parser can
    // tell, and this one cannot parse it.
    ("SELECT a FROM t GROUP BY DISTINCT ROLLUP (a)", W, Reason::Unparseable, NO_TX, NONE),
];

/// Strings, quoted identifiers and comments that hide words from the scan.
const QUOTING: &[Case] = &[
    ("SELECT 'INSERT INTO t VALUES (1)'", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT 'a; DELETE FROM t'", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT 'it''s; DROP TABLE t'", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT E'it\\'s; DROP TABLE t'", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT e'\\\\'; SELECT 2", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT $$; DELETE FROM t; $$", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT $body$ nextval('s') $body$", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT $a$ $b$ ; $b$ $a$", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT U&'d\\0061t; INSERT'", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT B'101', X'1F', N'x;y'", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT 1 -- ; DELETE FROM t", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT 1 /* ; DELETE FROM t */", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT 1 /* outer /* inner ; */ DELETE FROM t; */", R, Reason::PureRead, NO_TX, NONE),
    ("/* c */ -- d\n SELECT 1", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT \"nextval\" FROM t", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT \"a\"\"b\" FROM t", R, Reason::PureRead, NO_TX, NONE),
    // The string ends after `\`, so the rest is SQL: a real DELETE follows.
    ("SELECT 'a\\'; DELETE FROM t; --'", W, Reason::MultiStatementWrite, NO_TX, NONE),
    ("SELECT E'a\\'; DELETE FROM t; --'", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT \"nextval\"('s')", W, Reason::WritingFunction, NO_TX, NONE),
    ("SELECT \"NextVal\"('s')", W, Reason::UnknownFunction, NO_TX, NONE),
    ("SELECT 'abc", W, Reason::Unparseable, NO_TX, NONE),
    ("SELECT $$abc", W, Reason::Unparseable, NO_TX, NONE),
    ("SELECT 1 /* never closed", W, Reason::Unparseable, NO_TX, NONE),
    ("SELECT \"abc", W, Reason::Unparseable, NO_TX, NONE),
];

/// Reads that lock or write.
const HIDDEN_WRITES: &[Case] = &[
    ("SELECT * FROM t FOR UPDATE", W, Reason::LockingClause, NO_TX, NONE),
    ("SELECT * FROM t FOR NO KEY UPDATE", W, Reason::LockingClause, NO_TX, NONE),
    ("SELECT * FROM t FOR SHARE", W, Reason::LockingClause, NO_TX, NONE),
    // PostgreSQL 15+ rejects `1for`; older versions read `1` then `for share`.
    ("SELECT * FROM t LIMIT 1for share", W, Reason::LockingClause, NO_TX, NONE),
    ("SELECT * FROM t FOR/**/UPDATE", W, Reason::LockingClause, NO_TX, NONE),
    ("SELECT * FROM t FOR\n  NO  KEY\tUPDATE", W, Reason::LockingClause, NO_TX, NONE),
    ("SELECT * FROM t FOR KEY SHARE SKIP LOCKED", W, Reason::LockingClause, NO_TX, NONE),
    ("select * from t for update of t nowait", W, Reason::LockingClause, NO_TX, NONE),
    ("SELECT * FROM (SELECT * FROM t FOR UPDATE) s", W, Reason::LockingClause, NO_TX, NONE),
    ("WITH l AS (SELECT id FROM t FOR UPDATE SKIP LOCKED) SELECT * FROM l", W, Reason::LockingClause, NO_TX, NONE),
    ("WITH x AS (INSERT INTO t VALUES (1) RETURNING id) SELECT * FROM x", W, Reason::WritingCte, NO_TX, NONE),
    ("WITH x AS (UPDATE t SET a = 1 RETURNING *) SELECT count(*) FROM x", W, Reason::WritingCte, NO_TX, NONE),
    ("WITH x AS (DELETE FROM t RETURNING *) SELECT 1", W, Reason::WritingCte, NO_TX, NONE),
    ("WITH a AS (SELECT 1), b AS (delete from t) SELECT 1", W, Reason::WritingCte, NO_TX, NONE),
    ("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", W, Reason::Dml, NO_TX, NONE),
    ("WITH x AS (SELECT 1) UPDATE t SET a = 2", W, Reason::Dml, NO_TX, NONE),
    ("WITH x AS (SELECT 1) DELETE FROM t", W, Reason::Dml, NO_TX, NONE),
    ("SELECT * INTO newt FROM t", W, Reason::SelectInto, NO_TX, NONE),
    ("SELECT * INTO TEMP newt FROM t", W, Reason::SelectInto, NO_TX, PIN),
    ("SELECT a INTO TEMPORARY TABLE newt FROM t", W, Reason::SelectInto, NO_TX, PIN),
    ("SELECT nextval('s')", W, Reason::WritingFunction, NO_TX, NONE),
    ("SELECT NEXTVAL('s')", W, Reason::WritingFunction, NO_TX, NONE),
    ("SELECT pg_catalog.nextval('s')", W, Reason::WritingFunction, NO_TX, NONE),
    ("SELECT setval('s', 10)", W, Reason::WritingFunction, NO_TX, NONE),
    ("SELECT currval('s'), lastval()", W, Reason::WritingFunction, NO_TX, NONE),
    ("SELECT * FROM t WHERE id = (SELECT nextval('s'))", W, Reason::WritingFunction, NO_TX, NONE),
    ("SELECT * FROM t WHERE id IN (SELECT id FROM u WHERE x = nextval('s'))", W, Reason::WritingFunction, NO_TX, NONE),
    ("SELECT * FROM t WHERE pg_notify('c', 'p') IS NOT NULL", W, Reason::WritingFunction, NO_TX, NONE),
    ("SELECT pg_advisory_lock(1)", W, Reason::WritingFunction, NO_TX, PIN),
    ("SELECT pg_try_advisory_lock(1, 2)", W, Reason::WritingFunction, NO_TX, PIN),
    ("SELECT pg_advisory_xact_lock(1)", W, Reason::WritingFunction, NO_TX, NONE),
    ("SELECT pg_advisory_unlock(1)", W, Reason::WritingFunction, NO_TX, NONE),
    ("SELECT set_config('search_path', 'x', false)", W, Reason::WritingFunction, NO_TX, PARAM),
    ("SELECT txid_current()", W, Reason::WritingFunction, NO_TX, NONE),
    ("SELECT pg_catalog.set_config('search_path', '', false)", W, Reason::WritingFunction, NO_TX, PARAM),
    ("SELECT pg_current_xact_id()", W, Reason::WritingFunction, NO_TX, NONE),
    ("SELECT pg_switch_wal()", W, Reason::WritingFunction, NO_TX, NONE),
    ("SELECT lo_import('/x')", W, Reason::WritingFunction, NO_TX, NONE),
    ("SELECT pg_terminate_backend(123)", W, Reason::WritingFunction, NO_TX, NONE),
    ("SELECT pg_cancel_backend(123)", W, Reason::WritingFunction, NO_TX, NONE),
    ("SELECT pg_reload_conf()", W, Reason::WritingFunction, NO_TX, NONE),
    ("SELECT * FROM nextval('s')", W, Reason::WritingFunction, NO_TX, NONE),
    ("VALUES (nextval('s'))", W, Reason::WritingFunction, NO_TX, NONE),
    ("SELECT my_func(1)", W, Reason::UnknownFunction, NO_TX, NONE),
    ("SELECT * FROM t WHERE audit_log(id)", W, Reason::UnknownFunction, NO_TX, NONE),
    ("SELECT public.f(1)", W, Reason::UnknownFunction, NO_TX, NONE),
    ("SELECT public.count(*) FROM t", W, Reason::UnknownFunction, NO_TX, NONE),
    ("SELECT search('x')", W, Reason::UnknownFunction, NO_TX, NONE),
    ("SELECT cube(1)", W, Reason::UnknownFunction, NO_TX, NONE),
    ("SELECT * FROM t WHERE NOT f(x)", W, Reason::UnknownFunction, NO_TX, NONE),
    ("SELECT * FROM my_srf(1)", W, Reason::UnknownFunction, NO_TX, NONE),
    ("SELECT U&\"f\"(1)", W, Reason::UnknownFunction, NO_TX, NONE),
    ("SELECT (f(1)).x", W, Reason::UnknownFunction, NO_TX, NONE),
    // Not parseable by sqlparser but valid PostgreSQL: the primary.
    ("SELECT f(1) FROM t WINDOW w AS () QUALIFY_THIS", W, Reason::Unparseable, NO_TX, NONE),
    ("SELECT my_func(1) FROM t *", W, Reason::Unparseable, NO_TX, NONE),
    ("SELECT f(x) FROM t GROUP BY DISTINCT ROLLUP (a)", W, Reason::Unparseable, NO_TX, NONE),
];

/// Statements decided by their first keywords.
const COMMANDS: &[Case] = &[
    ("INSERT INTO t VALUES (1)", W, Reason::Dml, NO_TX, NONE),
    ("insert into t select * from u", W, Reason::Dml, NO_TX, NONE),
    ("UPDATE t SET a = 1", W, Reason::Dml, NO_TX, NONE),
    ("DELETE FROM t", W, Reason::Dml, NO_TX, NONE),
    ("MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE", W, Reason::Dml, NO_TX, NONE),
    ("INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET a = 2", W, Reason::Dml, NO_TX, NONE),
    ("CREATE TABLE t (a int)", W, Reason::Ddl, NO_TX, NONE),
    ("CREATE TABLE t2 AS SELECT * FROM t", W, Reason::Ddl, NO_TX, NONE),
    ("CREATE INDEX CONCURRENTLY i ON t (a)", W, Reason::Ddl, NO_TX, NONE),
    ("CREATE TEMP TABLE tt (a int)", W, Reason::Ddl, NO_TX, PIN),
    ("CREATE TEMPORARY TABLE tt AS SELECT 1", W, Reason::Ddl, NO_TX, PIN),
    ("CREATE GLOBAL TEMPORARY TABLE tt (a int)", W, Reason::Ddl, NO_TX, PIN),
    ("CREATE LOCAL TEMP TABLE tt (a int)", W, Reason::Ddl, NO_TX, PIN),
    ("CREATE OR REPLACE TEMP VIEW v AS SELECT 1", W, Reason::Ddl, NO_TX, PIN),
    ("CREATE TEMP SEQUENCE s", W, Reason::Ddl, NO_TX, PIN),
    ("CREATE TABLE pg_temp.tt (a int)", W, Reason::Ddl, NO_TX, PIN),
    ("CREATE UNLOGGED TABLE u (a int)", W, Reason::Ddl, NO_TX, NONE),
    ("CREATE TABLE temp (a int)", W, Reason::Ddl, NO_TX, NONE),
    ("CREATE OR REPLACE TEMPORARY RECURSIVE VIEW v (n) AS SELECT 1", W, Reason::Ddl, NO_TX, PIN),
    ("CREATE FUNCTION pg_temp.f() RETURNS int AS 'SELECT 1' LANGUAGE sql", W, Reason::Ddl, NO_TX, PIN),
    ("CREATE VIEW v AS SELECT * FROM \"pg_temp_3\".x", W, Reason::Ddl, NO_TX, PIN),
    ("ALTER TABLE t ADD COLUMN b int", W, Reason::Ddl, NO_TX, NONE),
    ("DROP TABLE t", W, Reason::Ddl, NO_TX, NONE),
    ("TRUNCATE t", W, Reason::Ddl, NO_TX, NONE),
    ("COMMENT ON TABLE t IS 'x'", W, Reason::Ddl, NO_TX, NONE),
    ("GRANT SELECT ON t TO r", W, Reason::Privileges, NO_TX, NONE),
    ("REVOKE ALL ON t FROM r", W, Reason::Privileges, NO_TX, NONE),
    ("VACUUM t", W, Reason::Maintenance, NO_TX, NONE),
    ("VACUUM (VERBOSE, ANALYZE) t", W, Reason::Maintenance, NO_TX, NONE),
    ("ANALYZE t", W, Reason::Maintenance, NO_TX, NONE),
    ("CLUSTER t USING i", W, Reason::Maintenance, NO_TX, NONE),
    ("REINDEX TABLE t", W, Reason::Maintenance, NO_TX, NONE),
    ("REFRESH MATERIALIZED VIEW CONCURRENTLY mv", W, Reason::Maintenance, NO_TX, NONE),
    ("CHECKPOINT", W, Reason::Maintenance, NO_TX, NONE),
    ("CALL proc(1)", W, Reason::Procedural, NO_TX, NONE),
    ("DO $$ BEGIN PERFORM 1; END $$", W, Reason::Procedural, NO_TX, NONE),
    ("DO LANGUAGE plpgsql $x$ BEGIN NULL; END $x$", W, Reason::Procedural, NO_TX, NONE),
    ("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", W, Reason::Lock, NO_TX, NONE),
    ("NOTIFY chan, 'payload'", W, Reason::Notify, NO_TX, NONE),
    ("LISTEN chan", W, Reason::Notify, NO_TX, PIN),
    ("UNLISTEN *", W, Reason::Notify, NO_TX, NONE),
    ("COPY t FROM STDIN", W, Reason::CopyIn, NO_TX, NONE),
    ("COPY t (a, b) FROM STDIN WITH (FORMAT csv)", W, Reason::CopyIn, NO_TX, NONE),
    ("COPY public.t FROM '/tmp/x'", W, Reason::CopyIn, NO_TX, NONE),
    ("COPY t TO STDOUT", R, Reason::CopyOut, NO_TX, NONE),
    ("copy t (a, b) to stdout with csv header", R, Reason::CopyOut, NO_TX, NONE),
    ("COPY \"T\" TO STDOUT (FORMAT binary)", R, Reason::CopyOut, NO_TX, NONE),
    ("COPY BINARY t TO STDOUT", R, Reason::CopyOut, NO_TX, NONE),
    ("COPY (SELECT * FROM t WHERE a > 1) TO STDOUT", R, Reason::CopyOut, NO_TX, NONE),
    ("COPY (SELECT nextval('s')) TO STDOUT", W, Reason::WritingFunction, NO_TX, NONE),
    ("COPY (DELETE FROM t RETURNING *) TO STDOUT", W, Reason::Dml, NO_TX, NONE),
    ("COPY t TO '/tmp/file'", W, Reason::CopyToFile, NO_TX, NONE),
    ("COPY t TO PROGRAM 'gzip > x'", W, Reason::CopyToFile, NO_TX, NONE),
    ("EXPLAIN SELECT * FROM t", R, Reason::Explain, NO_TX, NONE),
    ("EXPLAIN VERBOSE SELECT * FROM t", R, Reason::Explain, NO_TX, NONE),
    ("EXPLAIN INSERT INTO t VALUES (1)", R, Reason::Explain, NO_TX, NONE),
    ("EXPLAIN (COSTS off, FORMAT json) DELETE FROM t", R, Reason::Explain, NO_TX, NONE),
    ("EXPLAIN (ANALYZE false) DELETE FROM t", R, Reason::Explain, NO_TX, NONE),
    ("EXPLAIN ANALYZE SELECT * FROM t", R, Reason::PureRead, NO_TX, NONE),
    ("EXPLAIN ANALYZE VERBOSE SELECT * FROM t", R, Reason::PureRead, NO_TX, NONE),
    ("EXPLAIN ANALYZE DELETE FROM t", W, Reason::Dml, NO_TX, NONE),
    ("EXPLAIN ANALYSE INSERT INTO t VALUES (1)", W, Reason::Dml, NO_TX, NONE),
    ("EXPLAIN (ANALYZE, BUFFERS) UPDATE t SET a = 1", W, Reason::Dml, NO_TX, NONE),
    ("EXPLAIN (ANALYZE true) SELECT nextval('s')", W, Reason::WritingFunction, NO_TX, NONE),
    ("EXPLAIN (ANALYZE on) SELECT * FROM t FOR UPDATE", W, Reason::LockingClause, NO_TX, NONE),
    ("EXPLAIN ANALYZE CREATE TEMP TABLE x AS SELECT 1", W, Reason::Ddl, NO_TX, PIN),
    ("SHOW search_path", R, Reason::Show, NO_TX, NONE),
    ("SHOW ALL", R, Reason::Show, NO_TX, NONE),
    ("IMPORT FOREIGN SCHEMA s FROM SERVER x INTO y", W, Reason::Ddl, NO_TX, NONE),
    ("SECURITY LABEL ON TABLE t IS 'x'", W, Reason::Ddl, NO_TX, NONE),
    ("LOAD 'auto_explain'", W, Reason::Maintenance, NO_TX, PIN),
    ("FROBNICATE t", W, Reason::UnknownStatement, NO_TX, NONE),
    ("42", W, Reason::UnknownStatement, NO_TX, NONE),
    ("START", W, Reason::UnknownStatement, NO_TX, NONE),
];

/// Transactions and session state.
const TX_AND_SESSION: &[Case] = &[
    ("BEGIN", W, Reason::BeginReadWrite, BEGIN_RW, NONE),
    ("begin work", W, Reason::BeginReadWrite, BEGIN_RW, NONE),
    ("BEGIN TRANSACTION ISOLATION LEVEL SERIALIZABLE", W, Reason::BeginReadWrite, BEGIN_RW, NONE),
    ("BEGIN READ WRITE", W, Reason::BeginReadWrite, BEGIN_RW, NONE),
    ("BEGIN READ ONLY", R, Reason::BeginReadOnly, BEGIN_RO, NONE),
    ("BEGIN TRANSACTION READ ONLY", R, Reason::BeginReadOnly, BEGIN_RO, NONE),
    ("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY, DEFERRABLE", R, Reason::BeginReadOnly, BEGIN_RO, NONE),
    ("BEGIN ISOLATION LEVEL READ COMMITTED", W, Reason::BeginReadWrite, BEGIN_RW, NONE),
    ("START TRANSACTION", W, Reason::BeginReadWrite, BEGIN_RW, NONE),
    ("START TRANSACTION READ ONLY", R, Reason::BeginReadOnly, BEGIN_RO, NONE),
    ("start transaction isolation level repeatable read read only", R, Reason::BeginReadOnly, BEGIN_RO, NONE),
    // A hot standby refuses SERIALIZABLE even in a read-only transaction.
    ("start transaction isolation level serializable read only", W, Reason::Serializable, BEGIN_RO, NONE),
    ("BEGIN READ ONLY ISOLATION LEVEL SERIALIZABLE DEFERRABLE", W, Reason::Serializable, BEGIN_RO, NONE),
    ("COMMIT", R, Reason::TxControl, END, NONE),
    ("COMMIT WORK", R, Reason::TxControl, END, NONE),
    ("END", R, Reason::TxControl, END, NONE),
    ("END TRANSACTION", R, Reason::TxControl, END, NONE),
    ("ROLLBACK", R, Reason::TxControl, END, NONE),
    ("ABORT", R, Reason::TxControl, END, NONE),
    ("COMMIT AND NO CHAIN", R, Reason::TxControl, END, NONE),
    ("COMMIT AND CHAIN", R, Reason::TxControl, NO_TX, NONE),
    ("ROLLBACK AND CHAIN", R, Reason::TxControl, NO_TX, NONE),
    ("ROLLBACK TO SAVEPOINT sp", R, Reason::TxControl, NO_TX, NONE),
    ("ROLLBACK TO sp", R, Reason::TxControl, NO_TX, NONE),
    ("ROLLBACK WORK TO SAVEPOINT sp", R, Reason::TxControl, NO_TX, NONE),
    ("SAVEPOINT sp", R, Reason::TxControl, NO_TX, NONE),
    ("RELEASE SAVEPOINT sp", R, Reason::TxControl, NO_TX, NONE),
    ("RELEASE sp", R, Reason::TxControl, NO_TX, NONE),
    ("PREPARE TRANSACTION 'gx'", W, Reason::TwoPhase, END, NONE),
    ("COMMIT PREPARED 'gx'", W, Reason::TwoPhase, NO_TX, NONE),
    ("ROLLBACK PREPARED 'gx'", W, Reason::TwoPhase, NO_TX, NONE),
    ("SET TRANSACTION READ ONLY", R, Reason::TxControl, SET_RO, NONE),
    ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY", W, Reason::Serializable, SET_RO, NONE),
    ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", W, Reason::Serializable, NO_TX, NONE),
    ("SET TRANSACTION READ WRITE", W, Reason::TxControl, NO_TX, NONE),
    ("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", R, Reason::TxControl, NO_TX, NONE),
    ("SET search_path TO app", R, Reason::SessionCommand, NO_TX, PARAM),
    ("set statement_timeout = 5000", R, Reason::SessionCommand, NO_TX, PARAM),
    ("SET SESSION work_mem = '64MB'", R, Reason::SessionCommand, NO_TX, PARAM),
    ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", R, Reason::SessionCommand, NO_TX, PARAM),
    ("SET ROLE admin", R, Reason::SessionCommand, NO_TX, PARAM),
    ("SET TIME ZONE 'UTC'", R, Reason::SessionCommand, NO_TX, PARAM),
    ("SET LOCAL work_mem = '64MB'", R, Reason::SessionCommand, NO_TX, NONE),
    ("SET CONSTRAINTS ALL DEFERRED", R, Reason::SessionCommand, NO_TX, NONE),
    ("RESET search_path", R, Reason::SessionCommand, NO_TX, PARAM),
    ("RESET ALL", R, Reason::SessionCommand, NO_TX, PARAM),
    ("DISCARD ALL", R, Reason::SessionCommand, NO_TX, PARAM),
    ("DISCARD PLANS", R, Reason::SessionCommand, NO_TX, NONE),
    ("DISCARD TEMP", R, Reason::SessionCommand, NO_TX, NONE),
    ("PREPARE q AS SELECT 1", W, Reason::PreparedStatement, NO_TX, PIN),
    ("PREPARE q (int) AS INSERT INTO t VALUES ($1)", W, Reason::PreparedStatement, NO_TX, PIN),
    ("EXECUTE q(1)", W, Reason::PreparedStatement, NO_TX, NONE),
    ("DEALLOCATE q", R, Reason::SessionCommand, NO_TX, NONE),
    ("DEALLOCATE ALL", R, Reason::SessionCommand, NO_TX, NONE),
    ("DECLARE c CURSOR FOR SELECT * FROM t", R, Reason::Cursor, NO_TX, NONE),
    ("DECLARE c SCROLL CURSOR WITHOUT HOLD FOR SELECT 1", R, Reason::Cursor, NO_TX, NONE),
    ("DECLARE c CURSOR WITH HOLD FOR SELECT * FROM t", R, Reason::Cursor, NO_TX, PIN),
    ("DECLARE c NO SCROLL CURSOR FOR SELECT * FROM t FOR UPDATE", W, Reason::LockingClause, NO_TX, NONE),
    ("DECLARE c CURSOR WITH HOLD FOR SELECT nextval('s')", W, Reason::WritingFunction, NO_TX, PIN),
    ("DECLARE c", W, Reason::UnknownStatement, NO_TX, NONE),
    ("FETCH 10 FROM c", R, Reason::Cursor, NO_TX, NONE),
    ("MOVE NEXT IN c", R, Reason::Cursor, NO_TX, NONE),
    ("CLOSE c", R, Reason::Cursor, NO_TX, NONE),
];

/// Several statements in one Query.
const MULTI: &[Case] = &[
    ("SELECT 1; SELECT 2", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT 1; INSERT INTO t VALUES (1)", W, Reason::MultiStatementWrite, NO_TX, NONE),
    ("INSERT INTO t VALUES (1); SELECT 1", W, Reason::MultiStatementWrite, NO_TX, NONE),
    ("BEGIN; SELECT 1", W, Reason::MultiStatementWrite, BEGIN_RW, NONE),
    ("BEGIN READ ONLY; SELECT 1", R, Reason::BeginReadOnly, BEGIN_RO, NONE),
    ("BEGIN; INSERT INTO t VALUES (1); COMMIT", W, Reason::MultiStatementWrite, END, NONE),
    ("COMMIT; BEGIN", W, Reason::MultiStatementWrite, BEGIN_RW, NONE),
    ("BEGIN; SET TRANSACTION READ ONLY", W, Reason::MultiStatementWrite, BEGIN_RO, NONE),
    ("SET search_path TO x; SELECT 1", R, Reason::SessionCommand, NO_TX, PARAM),
    ("SET a = 1; LISTEN c", W, Reason::MultiStatementWrite, NO_TX, PIN),
    ("SELECT 1;;; SELECT 2;", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT ';'; SELECT $$;$$", R, Reason::PureRead, NO_TX, NONE),
    ("SELECT 1; SELECT nextval('s')", W, Reason::MultiStatementWrite, NO_TX, NONE),
    ("SELECT 1; FOO", W, Reason::MultiStatementWrite, NO_TX, NONE),
    ("CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO u VALUES (1); NOTIFY c)", W, Reason::Ddl, NO_TX, NONE),
    (
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true THEN 1 END; END",
        W,
        Reason::Ddl,
        NO_TX,
        NONE,
    ),
    (
        "CREATE PROCEDURE p() BEGIN ATOMIC INSERT INTO t VALUES (1); END; SELECT 1",
        W,
        Reason::MultiStatementWrite,
        NO_TX,
        NONE,
    ),
    ("", R, Reason::Empty, NO_TX, NONE),
    ("   ", R, Reason::Empty, NO_TX, NONE),
    (";", R, Reason::Empty, NO_TX, NONE),
    ("-- only a comment", R, Reason::Empty, NO_TX, NONE),
    ("/* a */ ; /* b */", R, Reason::Empty, NO_TX, NONE),
];

fn check(cases: &[Case]) -> usize {
    let mut failures = Vec::new();
    for &(sql, access, reason, tx, session) in cases {
        let got = classify(sql);
        let want = (access, reason, tx, session);
        if (got.access, got.reason, got.tx, got.session) != want {
            failures.push(format!("{sql:?}\n   got  {got:?}\n   want {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
    cases.len()
}

#[test]
fn classification_table() {
    let total =
        check(READS) + check(QUOTING) + check(HIDDEN_WRITES) + check(COMMANDS) + check(TX_AND_SESSION) + check(MULTI);
    assert!(total >= 150, "only {total} cases");
}

#[test]
fn nesting_is_bounded() {
    let deep = format!("{}SELECT 1", "EXPLAIN ANALYZE ".repeat(100_000));
    assert_eq!(classify(&deep).reason, Reason::Unparseable);
    let deep = format!("COPY ({}SELECT 1{}) TO STDOUT", "(".repeat(50_000), ")".repeat(50_000));
    assert_eq!(classify(&deep).access, Access::Read);
    let fine = "EXPLAIN ANALYZE EXPLAIN ANALYZE SELECT 1";
    assert_eq!(classify(fine).access, Access::Read);
    let locked = "DECLARE c CURSOR FOR DECLARE d CURSOR FOR SELECT 1 FOR UPDATE";
    assert_eq!(classify(locked).reason, Reason::LockingClause);
}

#[test]
fn hints_set_the_hint_and_keep_the_access() {
    let cases = [
        ("/* sluice: primary */ SELECT 1", Some(Hint::Primary), R),
        ("/*sluice:replica*/ INSERT INTO t VALUES (1)", Some(Hint::Replica), W),
        ("/* SLUICE :  Replica */SELECT 1", Some(Hint::Replica), R),
        ("-- sluice: primary\nSELECT 1", Some(Hint::Primary), R),
        ("/* app=x */ /* sluice: replica */ SELECT 1", Some(Hint::Replica), R),
        ("SELECT 1 /* sluice: primary */", None, R),
        ("SELECT 1; /* sluice: primary */ SELECT 2", None, R),
        ("/* sluice: secondary */ SELECT 1", None, R),
        ("/* sluice: replica */ BEGIN", Some(Hint::Replica), W),
    ];
    for (sql, hint, access) in cases {
        let class = classify(sql);
        assert_eq!((class.hint, class.access), (hint, access), "{sql}");
    }
}

#[test]
fn reason_names_are_snake_case() {
    for case in [READS, QUOTING, HIDDEN_WRITES, COMMANDS, TX_AND_SESSION, MULTI] {
        for &(_, _, reason, _, _) in case {
            let name = reason.as_str();
            assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{name}");
            assert_eq!(reason.to_string(), name);
        }
    }
}

/// Statements for the property tests: a mix of reads and writes of every kind.
fn sample_statement() -> impl Strategy<Value = &'static str> {
    let all: Vec<&'static str> = [READS, QUOTING, HIDDEN_WRITES, COMMANDS, TX_AND_SESSION]
        .iter()
        .flat_map(|cases| cases.iter().map(|c| c.0))
        // Unterminated forms swallow what follows them, so padding would change them.
        .filter(|sql| classify(sql).reason != Reason::Unparseable && !sql.contains("--"))
        .collect();
    proptest::sample::select(all)
}

fn padding() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just(" ".to_string()),
        Just("\n\t".to_string()),
        Just("/* c */".to_string()),
        Just("/* a /* nested */ b */".to_string()),
        Just("-- line\n".to_string()),
        Just("/* sluice: maybe */".to_string()),
    ];
    proptest::collection::vec(piece, 0..4).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn never_panics_on_arbitrary_text(sql in "\\PC*") {
        let _ = classify(&sql);
    }

    #[test]
    fn never_panics_on_sql_like_text(
        sql in "[ a-zA-Z0-9_'\"$;()*/\\-\\\\.,:=E&U\n]{0,80}"
    ) {
        let class = classify(&sql);
        // Whatever it is, it is well-formed.
        prop_assert!(!class.reason.as_str().is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn whitespace_and_comments_do_not_change_the_class(
        sql in sample_statement(),
        before in padding(),
        after in padding(),
    ) {
        let plain = classify(sql);
        let padded = classify(&format!("{before}{sql}{after}"));
        prop_assert_eq!(plain, padded);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn a_query_writes_if_any_statement_writes(a in sample_statement(), b in sample_statement()) {
        let (ca, cb) = (classify(a), classify(b));
        let both = classify(&format!("{a};\n{b}"));
        let writes = ca.access == Access::Write || cb.access == Access::Write;
        prop_assert_eq!(both.access == Access::Write, writes);
        prop_assert_eq!(both.session, ca.session.max(cb.session));
        if cb.tx != TxEffect::None && !(cb.tx == TxEffect::SetReadOnly && matches!(ca.tx, TxEffect::Begin { .. })) {
            prop_assert_eq!(both.tx, cb.tx);
        }
    }
}

/// Pieces of random, mostly valid SELECTs: reads, writes, calls, aliases, quoting.
const EXPRS: &[&str] = &[
    "a",
    "t.b",
    "1",
    "'s;x'",
    "$$d$$",
    "x::numeric(10, 2)",
    "count(*)",
    "now()",
    "nextval('s')",
    "f(x)",
    "public.g(1)",
    "\"h\"(1)",
    "row_number() OVER (PARTITION BY a)",
    "(SELECT 1)",
    "EXISTS (SELECT 1)",
    "ARRAY(SELECT 1)",
    "CAST(a AS varchar(3))",
    "lower(a) AS \"Insert\"",
    "a /* c */ + 1",
    "setval('s', 1)",
];
const FROMS: &[&str] = &[
    "t",
    "t x(a, b)",
    "(SELECT 1) s(a)",
    "generate_series(1, 2) g(n)",
    "my_srf(1)",
    "t JOIN u ON t.a = u.a",
    "t, LATERAL (SELECT nextval('s')) n",
    "t TABLESAMPLE SYSTEM (5)",
    "w",
];
const CONDS: &[&str] = &["a = 1", "f(a)", "a IN (SELECT b FROM u)", "NOT a", "a = (SELECT nextval('s'))", "TRUE"];
const TAILS: &[&str] = &["", "FOR UPDATE", "FOR SHARE", "ORDER BY a", "LIMIT 1", "UNION SELECT 1", "INTO z"];
const WITHS: &[&str] =
    &["", "WITH w AS (SELECT 1) ", "WITH w AS (DELETE FROM t RETURNING *) ", "WITH w(a) AS (SELECT 1) "];

fn select_like() -> impl Strategy<Value = String> {
    use proptest::sample::select;
    let exprs = proptest::collection::vec(select(EXPRS.to_vec()), 1..4);
    let cond = proptest::option::of(select(CONDS.to_vec()));
    (select(WITHS.to_vec()), exprs, select(FROMS.to_vec()), cond, select(TAILS.to_vec())).prop_map(
        |(with, exprs, from, cond, tail)| {
            let cond = cond.map(|c| format!(" WHERE {c}")).unwrap_or_default();
            format!("{with}SELECT {} FROM {from}{cond} {tail}", exprs.join(", "))
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// Whenever the lexical pass calls a text a read and sqlparser can parse it, the parser's walk
    /// agrees: the fast path never proves a read the parser would see writing.
    #[test]
    fn lexical_reads_agree_with_the_parser(sql in select_like()) {
        let class = classify(&sql);
        let parses = sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, &sql).is_ok();
        if class.access == Access::Read && parses {
            let allow = functions::AllowList::default();
            let parsed = ast::classify_parsed(&sql, functions::Resolver { catalog: None, allow: &allow });
            prop_assert_eq!(parsed.access, Access::Read, "{} parsed as {:?}", sql, parsed);
        }
    }
}
