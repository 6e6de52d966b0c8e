//! Which DDL can change what the function catalog says: after it, the session reloads the
//! catalog (and so clears the classification cache). Any other DDL (`TRUNCATE`, `CREATE TEMP
//! TABLE`, indexes, views...) leaves both alone: reloading for it costs a catalog query and
//! throws away every cached classification for nothing.

use super::statement::Stmt;

/// Objects whose creation, change or removal changes `pg_proc` (or the schema names calls are
/// resolved in). `routine` covers ALTER/DROP ROUTINE; an extension brings its functions.
const FUNCTION_OBJECTS: &[&str] = &["aggregate", "extension", "function", "procedure", "routine", "schema"];

/// Words that may stand between CREATE and the kind of object (`OR REPLACE`, `TRUSTED`...).
const CREATE_MODIFIERS: &[&str] = &["or", "replace", "trusted", "procedural"];

/// True if the statement (first keyword CREATE, ALTER or DROP) may change the function catalog:
/// `CREATE [OR REPLACE] FUNCTION|PROCEDURE|AGGREGATE|EXTENSION|SCHEMA`, `ALTER`/`DROP` of those
/// (and of `ROUTINE`), and `DROP OWNED` (drops the role's functions).
pub(super) fn changes_functions(stmt: Stmt<'_>) -> bool {
    if stmt.is(0, "create") {
        let kind = (1..stmt.toks.len()).find(|&i| !stmt.is_any(i, CREATE_MODIFIERS)).unwrap_or(stmt.toks.len());
        return stmt.is_any(kind, FUNCTION_OBJECTS);
    }
    if stmt.is(0, "drop") && stmt.is(1, "owned") {
        return true;
    }
    stmt.is_any(0, &["alter", "drop"]) && stmt.is_any(1, FUNCTION_OBJECTS)
}

#[cfg(test)]
mod tests {
    use crate::router::classify;

    #[test]
    fn only_function_ddl_reloads_the_catalog() {
        let reloads = [
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql STABLE AS 'SELECT 1'",
            "create or replace function f() returns int language sql as $$ select 1 $$",
            "CREATE PROCEDURE p() LANGUAGE sql AS 'SELECT 1'",
            "CREATE OR REPLACE PROCEDURE p() BEGIN ATOMIC SELECT 1; END",
            "CREATE AGGREGATE a (int) (sfunc = int4pl, stype = int)",
            "CREATE EXTENSION IF NOT EXISTS pgcrypto",
            "CREATE SCHEMA s",
            "ALTER FUNCTION f() STABLE",
            "ALTER ROUTINE f() IMMUTABLE",
            "ALTER PROCEDURE p() RENAME TO q",
            "ALTER EXTENSION pgcrypto UPDATE",
            "ALTER SCHEMA s RENAME TO t",
            "DROP FUNCTION IF EXISTS f()",
            "DROP PROCEDURE p",
            "DROP SCHEMA s CASCADE",
            "DROP EXTENSION pgcrypto",
            "DROP OWNED BY someone",
            "SELECT 1; CREATE FUNCTION g() RETURNS int LANGUAGE sql AS 'SELECT 1'; SELECT 2",
            "BEGIN; ALTER FUNCTION f() VOLATILE; COMMIT",
        ];
        for sql in reloads {
            assert!(classify(sql).changes_functions, "{sql}");
        }
        let keeps = [
            "TRUNCATE t",
            "CREATE TEMP TABLE tt (a int)",
            "CREATE TABLE function (a int)",
            "CREATE INDEX i ON t (a)",
            "CREATE OR REPLACE VIEW v AS SELECT 1",
            "ALTER TABLE t ADD COLUMN b int",
            "DROP TABLE t",
            "COMMENT ON FUNCTION f() IS 'x'",
            "INSERT INTO t VALUES (1)",
            "SELECT 'CREATE FUNCTION'",
            "EXPLAIN SELECT 1",
        ];
        for sql in keeps {
            assert!(!classify(sql).changes_functions, "{sql}");
        }
    }
}
