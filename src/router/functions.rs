//! Function calls: which ones may run on a replica.
//!
//! Order of decision for one call (`schema.name(...)` or `name(...)`):
//! 1. built-in writers (only for no schema or `pg_catalog`): `nextval`, advisory locks, ... -> Write;
//! 2. built-in node-local functions (`pg_backend_pid`, `pg_is_in_recovery`, ...) -> NodeLocal;
//! 3. the configured `read_only_functions` allow-list -> Read;
//! 4. built-in read-only functions (no schema or `pg_catalog`) -> Read;
//! 5. the [`FunctionCatalog`] loaded from `pg_proc`: IMMUTABLE/STABLE -> Read, VOLATILE -> Write;
//! 6. anything else is unknown -> Write.
//!
//! The built-in tables are sorted slices searched with `binary_search`; a unit test keeps them
//! sorted, lowercase and disjoint.

use std::collections::HashMap;

use super::builtins::{PINNING_WRITERS, READ_ONLY, WRITERS};
use super::node_local::is_node_local_function;
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
    /// A built-in whose answer describes the node (see `node_local`): the primary.
    NodeLocal,
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
        if builtin && is_node_local_function(name) {
            return FnVerdict::NodeLocal;
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
            assert!(!is_node_local_function(name), "{name} is also node-local");
        }
        for name in super::super::node_local::NODE_LOCAL_FUNCTIONS {
            assert!(builtin_writer(name).is_none(), "{name} is node-local and a writer");
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
        assert_eq!(r.resolve(None, "pg_backend_pid"), FnVerdict::NodeLocal);
        assert_eq!(r.resolve(Some("pg_catalog"), "pg_stat_get_activity"), FnVerdict::NodeLocal);
        assert_eq!(r.resolve(Some("public"), "pg_backend_pid"), FnVerdict::Unknown);
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
