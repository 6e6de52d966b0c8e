//! Node-local reads: statements whose answer describes the node that runs them rather than the
//! data, so a replica's answer is wrong for the cluster (a standby lists no prepared
//! transactions, holds other locks, runs other backends, is in recovery, is read-only).
//!
//! Three shapes are recognised, all matched only for built-in names (no schema or
//! `pg_catalog`): a reference to a system view ([`is_node_local_relation`]), a call of a
//! built-in function ([`NODE_LOCAL_FUNCTIONS`], the `pg_stat_get_*` family), and the settings a
//! standby reports differently (`SHOW transaction_read_only`, `current_setting(...)` of it).
//!
//! Deliberately not here: `inet_server_addr()` / `inet_server_port()` (used to see where a read
//! ran), the `pg_last_wal_*` / replay functions (they describe a replica; on the primary they
//! say nothing), and catalog sizes (the same on a physical replica).

use super::lexer::Kind;
use super::statement::Stmt;

/// System views (and the functions behind them) that describe the node. `pg_stat_*` and
/// `pg_statio_*` are matched by prefix. Sorted (binary search).
const NODE_LOCAL_RELATIONS: &[&str] = &[
    "pg_backend_memory_contexts",
    "pg_file_settings",
    "pg_hba_file_rules",
    "pg_ident_file_mappings",
    "pg_locks",
    "pg_prepared_xacts",
    "pg_replication_origin_status",
    "pg_replication_slots",
    "pg_settings",
    "pg_shmem_allocations",
];

/// Built-in functions whose result is the node's (`pg_stat_get_*` is matched by prefix).
/// Sorted (binary search); kept disjoint from the other built-in tables by a test.
pub(super) const NODE_LOCAL_FUNCTIONS: &[&str] = &[
    "pg_backend_pid",
    "pg_blocking_pids",
    "pg_conf_load_time",
    "pg_control_checkpoint",
    "pg_control_init",
    "pg_control_recovery",
    "pg_control_system",
    "pg_current_logfile",
    "pg_current_snapshot",
    "pg_current_wal_flush_lsn",
    "pg_current_wal_insert_lsn",
    "pg_current_wal_lsn",
    "pg_current_xact_id_if_assigned",
    "pg_get_backend_memory_contexts",
    "pg_get_replication_slots",
    "pg_get_shmem_allocations",
    "pg_hba_file_rules",
    "pg_is_in_recovery",
    "pg_lock_status",
    "pg_ls_archive_statusdir",
    "pg_ls_dir",
    "pg_ls_logdir",
    "pg_ls_tmpdir",
    "pg_ls_waldir",
    "pg_notification_queue_usage",
    "pg_postmaster_start_time",
    "pg_prepared_xact",
    "pg_safe_snapshot_blocking_pids",
    "pg_show_all_file_settings",
    "pg_show_all_settings",
    "pg_show_replication_origin_status",
    "pg_stat_file",
    "txid_current_if_assigned",
    "txid_current_snapshot",
];

/// Settings a hot standby reports differently from the primary. Sorted (binary search).
const NODE_LOCAL_SETTINGS: &[&str] = &["default_transaction_read_only", "in_hot_standby", "transaction_read_only"];

/// True if `name` (folded) is a built-in function whose answer is the node's.
pub(super) fn is_node_local_function(name: &str) -> bool {
    NODE_LOCAL_FUNCTIONS.binary_search(&name).is_ok() || name.starts_with("pg_stat_get_")
}

/// True if `name` (folded) is a system view that describes the node.
fn is_node_local_relation(name: &str) -> bool {
    NODE_LOCAL_RELATIONS.binary_search(&name).is_ok() || name.starts_with("pg_stat_") || name.starts_with("pg_statio_")
}

/// True if `setting` names a setting a standby reports differently (case-insensitive).
pub(super) fn is_node_local_setting(setting: &str) -> bool {
    let folded = setting.trim().to_ascii_lowercase();
    NODE_LOCAL_SETTINGS.binary_search(&folded.as_str()).is_ok()
}

/// True if the name token at `i` (not followed by `(`) is a node-local system view: unqualified
/// or in `pg_catalog`.
pub(super) fn relation_at(stmt: Stmt<'_>, i: usize) -> bool {
    let tok = stmt.toks[i];
    if tok.kind != Kind::Word {
        return false;
    }
    let text = tok.text(stmt.sql);
    if text.len() < 7 || !text.as_bytes()[..3].eq_ignore_ascii_case(b"pg_") {
        return false;
    }
    if i >= 2 && stmt.toks[i - 1].kind == Kind::Dot && !stmt.is(i - 2, "pg_catalog") {
        return false;
    }
    let mut buf = [0u8; 40];
    fold(text, &mut buf).is_some_and(is_node_local_relation)
}

/// True if the call at `i` (a `current_setting` name followed by `(`) reads a node-local
/// setting: `current_setting('transaction_read_only' [, missing_ok])`.
pub(super) fn current_setting_at(stmt: Stmt<'_>, i: usize) -> bool {
    let Some(arg) = stmt.toks.get(i + 2) else { return false };
    if arg.kind != Kind::String {
        return false;
    }
    let text = arg.text(stmt.sql);
    let inner = text.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')).unwrap_or(text);
    is_node_local_setting(inner)
}

/// True if a SHOW statement shows a node-local setting.
pub(super) fn show_is_node_local(stmt: Stmt<'_>) -> bool {
    stmt.toks.get(1).is_some_and(|tok| {
        matches!(tok.kind, Kind::Word | Kind::QuotedIdent)
            && is_node_local_setting(tok.text(stmt.sql).trim_matches('"'))
    })
}

/// ASCII-lowercase `text` into `buf`, or `None` if it does not fit or is not ASCII.
fn fold<'b>(text: &str, buf: &'b mut [u8; 40]) -> Option<&'b str> {
    let bytes = text.as_bytes();
    if bytes.len() > buf.len() || !bytes.is_ascii() {
        return None;
    }
    let out = &mut buf[..bytes.len()];
    out.copy_from_slice(bytes);
    out.make_ascii_lowercase();
    std::str::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::{classify, Access, Reason};

    /// (sql, node-local?) — everything here is otherwise a plain read.
    const CASES: &[(&str, bool)] = &[
        ("SELECT gid FROM pg_prepared_xacts", true),
        ("select gid from PG_CATALOG.pg_prepared_xacts where database = current_database()", true),
        ("SELECT * FROM pg_locks l JOIN pg_class c ON c.oid = l.relation", true),
        ("SELECT pid, state FROM pg_stat_activity WHERE pid <> pg_backend_pid()", true),
        ("SELECT * FROM pg_stat_replication", true),
        ("SELECT slot_name FROM pg_replication_slots", true),
        ("SELECT * FROM pg_stat_user_tables", true),
        ("SELECT * FROM pg_statio_user_indexes", true),
        ("SELECT * FROM pg_stat_progress_vacuum", true),
        ("SELECT setting FROM pg_settings WHERE name = 'work_mem'", true),
        ("SELECT pg_backend_pid()", true),
        ("SELECT pg_is_in_recovery()", true),
        ("SELECT pg_catalog.pg_is_in_recovery()", true),
        ("SELECT pg_postmaster_start_time(), pg_conf_load_time()", true),
        ("SELECT pg_current_wal_lsn()", true),
        ("SELECT pg_stat_get_backend_pid(1)", true),
        ("SELECT * FROM pg_lock_status()", true),
        ("SELECT txid_current_snapshot()", true),
        ("SELECT current_setting('transaction_read_only')", true),
        ("SELECT pg_catalog.current_setting('Default_Transaction_Read_Only', true)", true),
        ("SELECT current_setting('in_hot_standby')", true),
        ("SHOW transaction_read_only", true),
        ("show DEFAULT_TRANSACTION_READ_ONLY", true),
        ("SELECT 1; SELECT pg_backend_pid()", true),
        ("SELECT * FROM t x(a) WHERE a = pg_backend_pid()", true),
        ("COPY (SELECT * FROM pg_locks) TO STDOUT", true),
        ("DECLARE c CURSOR FOR SELECT * FROM pg_stat_activity", true),
        // Not node-local: where a read ran, replica positions, catalog data.
        ("SELECT inet_server_addr(), inet_server_port()", false),
        ("SELECT pg_last_wal_replay_lsn()", false),
        ("SELECT current_setting('work_mem')", false),
        ("SHOW work_mem", false),
        ("SELECT * FROM pg_class", false),
        ("SELECT pg_stat FROM t", false),
        ("SELECT * FROM app.pg_locks", false),
        ("SELECT public.pg_backend_pid_x FROM t", false),
        ("SELECT 'pg_locks'", false),
    ];

    #[test]
    fn node_local_reads_are_recognised() {
        for &(sql, local) in CASES {
            let class = classify(sql);
            if local {
                assert_eq!((class.access, class.reason), (Access::NodeLocal, Reason::NodeLocal), "{sql}");
            } else {
                assert_eq!(class.access, Access::Read, "{sql}: {class:?}");
            }
        }
    }

    #[test]
    fn access_is_ordered_by_strictness() {
        assert!(Access::Read < Access::NodeLocal && Access::NodeLocal < Access::Write);
        assert_eq!(Access::NodeLocal.max(Access::Read), Access::NodeLocal);
    }

    #[test]
    fn writes_stay_writes() {
        for sql in [
            "SELECT pg_backend_pid(), nextval('s')",
            "SELECT * FROM pg_locks FOR UPDATE",
            "SELECT pg_backend_pid(); INSERT INTO t VALUES (1)",
            "INSERT INTO t SELECT pid FROM pg_stat_activity",
        ] {
            assert_eq!(classify(sql).access, Access::Write, "{sql}");
        }
    }

    #[test]
    fn tables_are_sorted_and_lowercase() {
        for list in [NODE_LOCAL_RELATIONS, NODE_LOCAL_FUNCTIONS, NODE_LOCAL_SETTINGS] {
            for pair in list.windows(2) {
                assert!(pair[0] < pair[1], "not sorted/unique: {pair:?}");
            }
            assert!(list.iter().all(|n| *n == n.to_ascii_lowercase()));
        }
        assert!(NODE_LOCAL_RELATIONS.iter().all(|n| n.len() <= 40));
    }
}
