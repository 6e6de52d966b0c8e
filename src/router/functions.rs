//! Function calls: which ones may run on a replica.
//!
//! Order of decision for one call (`schema.name(...)` or `name(...)`):
//! 1. built-in writers (only for no schema or `pg_catalog`): `nextval`, advisory locks, ... -> Write;
//! 2. the configured `read_only_functions` allow-list -> Read;
//! 3. built-in read-only functions (no schema or `pg_catalog`) -> Read;
//! 4. the [`FunctionCatalog`] loaded from `pg_proc`: IMMUTABLE/STABLE -> Read, VOLATILE -> Write;
//! 5. anything else is unknown -> Write.
//!
//! The built-in tables are sorted slices searched with `binary_search`; a unit test keeps them
//! sorted, lowercase and disjoint.

use std::collections::HashMap;

use super::SessionEffect;

/// PostgreSQL truncates identifiers to 63 bytes; longer names are never built-ins.
const MAX_NAME: usize = 63;

/// What a function call means for routing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FnVerdict {
    /// Known not to write: fine on a replica.
    ReadOnly,
    /// A built-in that writes, locks, or must run on the primary (with its session effect).
    Writer(SessionEffect),
    /// The catalog says VOLATILE.
    Volatile,
    /// Not known at all.
    Unknown,
}

/// A function's volatility as recorded in `pg_proc.provolatile`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Volatility {
    Immutable,
    Stable,
    Volatile,
}

impl Volatility {
    fn from_char(c: char) -> Self {
        match c {
            'i' => Volatility::Immutable,
            's' => Volatility::Stable,
            // 'v' and anything unexpected: assume the worst.
            _ => Volatility::Volatile,
        }
    }
}

/// Function volatilities loaded from `pg_proc` (by the catalog loader, not here).
///
/// Overloads and same-named functions in several schemas fold to the worst volatility: a call
/// cannot be matched to one overload without types.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FunctionCatalog {
    qualified: HashMap<String, HashMap<String, Volatility>>,
    by_name: HashMap<String, Volatility>,
}

impl FunctionCatalog {
    /// Build from `(schema, name, provolatile)` rows; `provolatile` is `'i'`, `'s'` or `'v'`
    /// (anything else counts as volatile).
    pub fn from_rows(rows: impl IntoIterator<Item = (String, String, char)>) -> Self {
        let mut catalog = Self::default();
        for (schema, name, provolatile) in rows {
            let v = Volatility::from_char(provolatile);
            let worst = catalog.by_name.entry(name.clone()).or_insert(v);
            *worst = (*worst).max(v);
            let in_schema = catalog.qualified.entry(schema).or_default();
            let worst = in_schema.entry(name).or_insert(v);
            *worst = (*worst).max(v);
        }
        catalog
    }

    /// Number of distinct (schema, name) pairs.
    #[must_use]
    pub fn len(&self) -> usize {
        self.qualified.values().map(HashMap::len).sum()
    }

    /// True if the catalog knows no function.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    fn lookup(&self, schema: Option<&str>, name: &str) -> Option<Volatility> {
        match schema {
            Some(s) => self.qualified.get(s)?.get(name).copied(),
            None => self.by_name.get(name).copied(),
        }
    }
}

/// The configured `read_only_functions`: `"schema.name"` entries match that schema (and
/// unqualified calls of that name, which most likely resolve to it); `"name"` entries match the
/// name in any schema. Entries are folded to lowercase unless written in double quotes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct AllowList {
    qualified: Vec<(String, String)>,
    names: Vec<String>,
}

impl AllowList {
    pub fn new(entries: &[String]) -> Self {
        let mut list = Self::default();
        for entry in entries {
            let parts: Vec<String> = entry.split('.').map(fold_config_ident).collect();
            match parts.as_slice() {
                [name] => list.names.push(name.clone()),
                [.., schema, name] => list.qualified.push((schema.clone(), name.clone())),
                [] => {}
            }
        }
        list
    }

    fn allows(&self, schema: Option<&str>, name: &str) -> bool {
        if self.names.iter().any(|n| n == name) {
            return true;
        }
        self.qualified.iter().any(|(s, n)| n == name && schema.is_none_or(|schema| schema == s))
    }
}

fn fold_config_ident(part: &str) -> String {
    let part = part.trim();
    match part.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => part.to_ascii_lowercase(),
    }
}

/// Everything that decides function calls for one classification.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Resolver<'a> {
    /// The loaded catalog, if any.
    pub catalog: Option<&'a FunctionCatalog>,
    /// The configured allow-list.
    pub allow: &'a AllowList,
}

impl Resolver<'_> {
    /// Decide one call. `schema` and `name` are already case-folded (unquoted identifiers
    /// lowercase, quoted ones exact).
    pub fn resolve(&self, schema: Option<&str>, name: &str) -> FnVerdict {
        let builtin = schema.is_none_or(|s| s == "pg_catalog");
        if builtin {
            if let Some(effect) = builtin_writer(name) {
                return FnVerdict::Writer(effect);
            }
        }
        if self.allow.allows(schema, name) {
            return FnVerdict::ReadOnly;
        }
        if builtin && READ_ONLY.binary_search(&name).is_ok() {
            return FnVerdict::ReadOnly;
        }
        match self.catalog.and_then(|c| c.lookup(schema, name)) {
            Some(Volatility::Immutable | Volatility::Stable) => FnVerdict::ReadOnly,
            Some(Volatility::Volatile) => FnVerdict::Volatile,
            None => FnVerdict::Unknown,
        }
    }

    /// Decide a call whose name parts are as written (unquoted parts are folded here).
    pub fn resolve_raw(&self, schema: Option<(&str, bool)>, name: (&str, bool)) -> FnVerdict {
        let mut schema_buf = [0u8; MAX_NAME];
        let mut name_buf = [0u8; MAX_NAME];
        let schema = match schema {
            Some(s) => match fold(s, &mut schema_buf) {
                Some(folded) => Some(folded),
                None => return FnVerdict::Unknown,
            },
            None => None,
        };
        match fold(name, &mut name_buf) {
            Some(name) => self.resolve(schema, name),
            None => FnVerdict::Unknown,
        }
    }
}

/// Fold an identifier as PostgreSQL does: unquoted -> ASCII lowercase, quoted -> as is. `None`
/// if it is too long to be any known function.
fn fold<'b>((text, quoted): (&'b str, bool), buf: &'b mut [u8; MAX_NAME]) -> Option<&'b str> {
    if quoted {
        return Some(text);
    }
    let bytes = text.as_bytes();
    if bytes.len() > MAX_NAME {
        return None;
    }
    let out = &mut buf[..bytes.len()];
    out.copy_from_slice(bytes);
    out.make_ascii_lowercase();
    std::str::from_utf8(out).ok()
}

/// The session effect of a built-in writer, or `None` if `name` is not one.
fn builtin_writer(name: &str) -> Option<SessionEffect> {
    if PINNING_WRITERS.binary_search(&name).is_ok() {
        return Some(SessionEffect::Pin);
    }
    if name == "set_config" {
        return Some(SessionEffect::Parameter);
    }
    // Large objects: every lo_* function is treated as writing (most do).
    if WRITERS.binary_search(&name).is_ok() || name.starts_with("lo_") {
        return Some(SessionEffect::None);
    }
    None
}

/// Session-level advisory locks: they write and outlive the transaction.
const PINNING_WRITERS: &[&str] =
    &["pg_advisory_lock", "pg_advisory_lock_shared", "pg_try_advisory_lock", "pg_try_advisory_lock_shared"];

/// Built-ins that write, lock, assign a transaction id, signal other backends, or fail on a
/// standby: they must run on the primary.
const WRITERS: &[&str] = &[
    "currval",
    "dblink_exec",
    "lastval",
    "loread",
    "lowrite",
    "nextval",
    "pg_advisory_unlock",
    "pg_advisory_unlock_all",
    "pg_advisory_unlock_shared",
    "pg_advisory_xact_lock",
    "pg_advisory_xact_lock_shared",
    "pg_backup_start",
    "pg_backup_stop",
    "pg_cancel_backend",
    "pg_copy_logical_replication_slot",
    "pg_copy_physical_replication_slot",
    "pg_create_logical_replication_slot",
    "pg_create_physical_replication_slot",
    "pg_create_restore_point",
    "pg_current_wal_flush_lsn",
    "pg_current_wal_insert_lsn",
    "pg_current_wal_lsn",
    "pg_current_xact_id",
    "pg_drop_replication_slot",
    "pg_file_write",
    "pg_import_system_collations",
    "pg_log_backend_memory_contexts",
    "pg_logical_emit_message",
    "pg_logical_slot_get_binary_changes",
    "pg_logical_slot_get_changes",
    "pg_notify",
    "pg_promote",
    "pg_reload_conf",
    "pg_replication_origin_advance",
    "pg_replication_origin_create",
    "pg_replication_origin_drop",
    "pg_replication_origin_session_setup",
    "pg_replication_slot_advance",
    "pg_rotate_logfile",
    "pg_start_backup",
    "pg_stat_reset",
    "pg_stat_reset_shared",
    "pg_stat_reset_single_function_counters",
    "pg_stat_reset_single_table_counters",
    "pg_stat_reset_slru",
    "pg_stat_statements_reset",
    "pg_stop_backup",
    "pg_switch_wal",
    "pg_terminate_backend",
    "pg_try_advisory_xact_lock",
    "pg_try_advisory_xact_lock_shared",
    "pg_wal_replay_pause",
    "pg_wal_replay_resume",
    "pg_walfile_name",
    "pg_walfile_name_offset",
    "query_to_xml",
    "query_to_xml_and_xmlschema",
    "query_to_xmlschema",
    "setval",
    "txid_current",
];

/// Built-ins (and type names used as casts) known not to write. Volatile-but-harmless functions
/// (random, clock_timestamp, pg_sleep, gen_random_uuid) are here on purpose.
const READ_ONLY: &[&str] = &[
    "abbrev",
    "abs",
    "acos",
    "age",
    "any_value",
    "area",
    "array",
    "array_agg",
    "array_append",
    "array_cat",
    "array_dims",
    "array_fill",
    "array_length",
    "array_lower",
    "array_ndims",
    "array_position",
    "array_positions",
    "array_prepend",
    "array_remove",
    "array_replace",
    "array_sample",
    "array_shuffle",
    "array_to_json",
    "array_to_string",
    "array_to_tsvector",
    "array_upper",
    "ascii",
    "asin",
    "atan",
    "atan2",
    "avg",
    "bernoulli",
    "bigint",
    "bit",
    "bit_and",
    "bit_count",
    "bit_length",
    "bit_or",
    "bit_xor",
    "bool",
    "bool_and",
    "bool_or",
    "boolean",
    "bpchar",
    "broadcast",
    "btrim",
    "bytea",
    "cardinality",
    "cbrt",
    "ceil",
    "ceiling",
    "char",
    "char_length",
    "character",
    "character_length",
    "chr",
    "clock_timestamp",
    "coalesce",
    "col_description",
    "concat",
    "concat_ws",
    "convert",
    "convert_from",
    "convert_to",
    "corr",
    "cos",
    "cosh",
    "cot",
    "count",
    "covar_pop",
    "covar_samp",
    "crc32",
    "crc32c",
    "crypt",
    "cume_dist",
    "current_catalog",
    "current_database",
    "current_date",
    "current_query",
    "current_role",
    "current_schema",
    "current_schemas",
    "current_setting",
    "current_time",
    "current_timestamp",
    "current_user",
    "date",
    "date_add",
    "date_bin",
    "date_part",
    "date_subtract",
    "date_trunc",
    "daterange",
    "decimal",
    "decode",
    "degrees",
    "dense_rank",
    "digest",
    "div",
    "encode",
    "every",
    "exp",
    "extract",
    "factorial",
    "family",
    "first_value",
    "float",
    "float4",
    "float8",
    "floor",
    "format",
    "format_type",
    "gcd",
    "gen_random_bytes",
    "gen_random_uuid",
    "gen_salt",
    "generate_series",
    "generate_subscripts",
    "get_bit",
    "get_byte",
    "greatest",
    "grouping",
    "has_column_privilege",
    "has_database_privilege",
    "has_function_privilege",
    "has_schema_privilege",
    "has_sequence_privilege",
    "has_table_privilege",
    "hmac",
    "host",
    "hostmask",
    "inet",
    "inet_client_addr",
    "inet_client_port",
    "inet_server_addr",
    "inet_server_port",
    "initcap",
    "int",
    "int2",
    "int4",
    "int4range",
    "int8",
    "int8range",
    "integer",
    "interval",
    "isempty",
    "isfinite",
    "json",
    "json_agg",
    "json_array_elements",
    "json_array_elements_text",
    "json_array_length",
    "json_build_array",
    "json_build_object",
    "json_each",
    "json_each_text",
    "json_extract_path",
    "json_extract_path_text",
    "json_object",
    "json_object_agg",
    "json_object_keys",
    "json_populate_record",
    "json_populate_recordset",
    "json_strip_nulls",
    "json_table",
    "json_to_record",
    "json_to_recordset",
    "json_typeof",
    "jsonb",
    "jsonb_agg",
    "jsonb_array_elements",
    "jsonb_array_elements_text",
    "jsonb_array_length",
    "jsonb_build_array",
    "jsonb_build_object",
    "jsonb_each",
    "jsonb_each_text",
    "jsonb_extract_path",
    "jsonb_extract_path_text",
    "jsonb_insert",
    "jsonb_object",
    "jsonb_object_agg",
    "jsonb_object_keys",
    "jsonb_path_exists",
    "jsonb_path_match",
    "jsonb_path_query",
    "jsonb_path_query_array",
    "jsonb_path_query_first",
    "jsonb_populate_record",
    "jsonb_populate_recordset",
    "jsonb_pretty",
    "jsonb_set",
    "jsonb_set_lax",
    "jsonb_strip_nulls",
    "jsonb_to_record",
    "jsonb_to_recordset",
    "jsonb_typeof",
    "justify_days",
    "justify_hours",
    "justify_interval",
    "lag",
    "last_value",
    "lcm",
    "lead",
    "least",
    "left",
    "length",
    "ln",
    "localtime",
    "localtimestamp",
    "log",
    "log10",
    "lower",
    "lower_inc",
    "lower_inf",
    "lpad",
    "ltrim",
    "make_date",
    "make_interval",
    "make_time",
    "make_timestamp",
    "make_timestamptz",
    "masklen",
    "max",
    "md5",
    "min",
    "min_scale",
    "mod",
    "mode",
    "money",
    "name",
    "netmask",
    "network",
    "normalize",
    "now",
    "nth_value",
    "ntile",
    "nullif",
    "num_nonnulls",
    "num_nulls",
    "numeric",
    "numrange",
    "obj_description",
    "octet_length",
    "oid",
    "overlay",
    "percent_rank",
    "percentile_cont",
    "percentile_disc",
    "pg_backend_pid",
    "pg_blocking_pids",
    "pg_client_encoding",
    "pg_column_size",
    "pg_conf_load_time",
    "pg_current_snapshot",
    "pg_database_size",
    "pg_encoding_to_char",
    "pg_function_is_visible",
    "pg_get_constraintdef",
    "pg_get_expr",
    "pg_get_functiondef",
    "pg_get_indexdef",
    "pg_get_keywords",
    "pg_get_serial_sequence",
    "pg_get_triggerdef",
    "pg_get_userbyid",
    "pg_get_viewdef",
    "pg_get_wal_replay_pause_state",
    "pg_has_role",
    "pg_indexes_size",
    "pg_input_error_info",
    "pg_input_is_valid",
    "pg_is_in_recovery",
    "pg_is_wal_replay_paused",
    "pg_jit_available",
    "pg_last_wal_receive_lsn",
    "pg_last_wal_replay_lsn",
    "pg_last_xact_replay_timestamp",
    "pg_listening_channels",
    "pg_notification_queue_usage",
    "pg_postmaster_start_time",
    "pg_relation_filenode",
    "pg_relation_filepath",
    "pg_relation_size",
    "pg_size_bytes",
    "pg_size_pretty",
    "pg_sleep",
    "pg_sleep_for",
    "pg_sleep_until",
    "pg_snapshot_xmax",
    "pg_snapshot_xmin",
    "pg_table_is_visible",
    "pg_table_size",
    "pg_tablespace_size",
    "pg_total_relation_size",
    "pg_trigger_depth",
    "pg_type_is_visible",
    "pg_typeof",
    "pg_visible_in_snapshot",
    "pg_wal_lsn_diff",
    "phraseto_tsquery",
    "pi",
    "plainto_tsquery",
    "position",
    "pow",
    "power",
    "quote_ident",
    "quote_literal",
    "quote_nullable",
    "radians",
    "random",
    "random_normal",
    "range_agg",
    "range_intersect_agg",
    "range_merge",
    "rank",
    "real",
    "regclass",
    "regexp_count",
    "regexp_instr",
    "regexp_like",
    "regexp_match",
    "regexp_matches",
    "regexp_replace",
    "regexp_split_to_array",
    "regexp_split_to_table",
    "regexp_substr",
    "regr_avgx",
    "regr_avgy",
    "regr_count",
    "regr_intercept",
    "regr_r2",
    "regr_slope",
    "regr_sxx",
    "regr_sxy",
    "regr_syy",
    "repeat",
    "replace",
    "reverse",
    "right",
    "round",
    "row",
    "row_number",
    "row_to_json",
    "rpad",
    "rtrim",
    "scale",
    "session_user",
    "set_bit",
    "set_byte",
    "set_masklen",
    "setweight",
    "sha224",
    "sha256",
    "sha384",
    "sha512",
    "shobj_description",
    "sign",
    "sin",
    "sinh",
    "smallint",
    "split_part",
    "sqrt",
    "starts_with",
    "statement_timestamp",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "string_agg",
    "string_to_array",
    "string_to_table",
    "strpos",
    "substr",
    "substring",
    "sum",
    "system",
    "system_rows",
    "system_time",
    "system_user",
    "tan",
    "tanh",
    "text",
    "time",
    "timeofday",
    "timestamp",
    "timestamptz",
    "timetz",
    "timezone",
    "to_ascii",
    "to_char",
    "to_date",
    "to_hex",
    "to_json",
    "to_jsonb",
    "to_number",
    "to_regclass",
    "to_regnamespace",
    "to_regproc",
    "to_regprocedure",
    "to_regrole",
    "to_regtype",
    "to_timestamp",
    "to_tsquery",
    "to_tsvector",
    "transaction_timestamp",
    "translate",
    "trim",
    "trim_array",
    "trim_scale",
    "trunc",
    "ts_headline",
    "ts_rank",
    "ts_rank_cd",
    "tsrange",
    "tstzrange",
    "tsvector_to_array",
    "txid_current_snapshot",
    "txid_snapshot_xmax",
    "txid_snapshot_xmin",
    "txid_visible_in_snapshot",
    "unistr",
    "unnest",
    "upper",
    "upper_inc",
    "upper_inf",
    "user",
    "uuid",
    "uuid_generate_v1",
    "uuid_generate_v4",
    "uuidv4",
    "uuidv7",
    "var_pop",
    "var_samp",
    "varbit",
    "varchar",
    "variance",
    "varying",
    "version",
    "websearch_to_tsquery",
    "width_bucket",
    "xmlagg",
    "xmlattributes",
    "xmlcomment",
    "xmlconcat",
    "xmlelement",
    "xmlexists",
    "xmlforest",
    "xmlparse",
    "xmlpi",
    "xmlroot",
    "xmlserialize",
    "xmltable",
    "xpath",
    "xpath_exists",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted_lowercase(list: &[&str]) {
        for pair in list.windows(2) {
            assert!(pair[0] < pair[1], "not sorted/unique: {pair:?}");
        }
        for name in list {
            assert_eq!(*name, name.to_ascii_lowercase());
        }
    }

    #[test]
    fn tables_are_sorted_lowercase_and_disjoint() {
        sorted_lowercase(READ_ONLY);
        sorted_lowercase(WRITERS);
        sorted_lowercase(PINNING_WRITERS);
        for name in WRITERS.iter().chain(PINNING_WRITERS) {
            assert!(READ_ONLY.binary_search(name).is_err(), "{name} in both");
            assert!(!name.starts_with("lo_"));
        }
        for name in READ_ONLY {
            assert!(builtin_writer(name).is_none(), "{name} is also a writer");
        }
    }

    #[test]
    fn resolution_order() {
        let catalog = FunctionCatalog::from_rows([
            ("public".into(), "stable_f".into(), 's'),
            ("public".into(), "vol_f".into(), 'v'),
            ("app".into(), "both".into(), 'i'),
            ("other".into(), "both".into(), 'v'),
            ("public".into(), "nextval".into(), 'i'),
        ]);
        let allow = AllowList::new(&["public.vol_f".into(), "\"Mixed\"".into(), "Listed".into()]);
        let r = Resolver { catalog: Some(&catalog), allow: &allow };
        assert_eq!(r.resolve(None, "count"), FnVerdict::ReadOnly);
        assert_eq!(r.resolve(Some("pg_catalog"), "count"), FnVerdict::ReadOnly);
        assert_eq!(r.resolve(Some("public"), "count"), FnVerdict::Unknown);
        assert_eq!(r.resolve(None, "nextval"), FnVerdict::Writer(SessionEffect::None));
        assert_eq!(r.resolve(Some("public"), "nextval"), FnVerdict::ReadOnly);
        assert_eq!(r.resolve(None, "set_config"), FnVerdict::Writer(SessionEffect::Parameter));
        assert_eq!(r.resolve(None, "pg_advisory_lock"), FnVerdict::Writer(SessionEffect::Pin));
        assert_eq!(r.resolve(None, "lo_import"), FnVerdict::Writer(SessionEffect::None));
        assert_eq!(r.resolve(None, "stable_f"), FnVerdict::ReadOnly);
        assert_eq!(r.resolve(Some("public"), "vol_f"), FnVerdict::ReadOnly);
        assert_eq!(r.resolve(None, "vol_f"), FnVerdict::ReadOnly);
        assert_eq!(r.resolve(Some("other"), "vol_f"), FnVerdict::Unknown);
        assert_eq!(r.resolve(Some("app"), "both"), FnVerdict::ReadOnly);
        assert_eq!(r.resolve(None, "both"), FnVerdict::Volatile);
        assert_eq!(r.resolve(None, "Mixed"), FnVerdict::ReadOnly);
        assert_eq!(r.resolve(None, "listed"), FnVerdict::ReadOnly);
        assert_eq!(r.resolve(None, "nope"), FnVerdict::Unknown);
        assert_eq!(r.resolve_raw(None, ("NOW", false)), FnVerdict::ReadOnly);
        assert_eq!(r.resolve_raw(None, ("NOW", true)), FnVerdict::Unknown);
        assert_eq!(
            r.resolve_raw(Some(("PG_CATALOG", false)), ("NextVal", false)),
            FnVerdict::Writer(SessionEffect::None)
        );
        assert_eq!(r.resolve_raw(None, (&"x".repeat(80), false)), FnVerdict::Unknown);
        assert_eq!(catalog.len(), 5);
    }
}
