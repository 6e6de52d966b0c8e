//! [`Classifier`]: classification with a bounded cache and a function catalog, shared by all
//! sessions through an `Arc`.
//!
//! The cache is keyed by statement text reduced by [`cache_key`] (comments other than a leading
//! hint dropped, plain literals replaced), so per-request comments and inlined literal values do
//! not defeat or churn it. The key is built on the caller's stack (for texts up to
//! [`INLINE_KEY_TEXT_BYTES`]) and hashed once by a [`KeyHasher`] with per-process random seeds
//! (statement text comes from clients: no hash flooding); the hash picks a shard and is the key
//! of that shard's map, whose entries keep the key text to compare. Each shard holds at
//! most its share of `cache_entries`; a full shard evicts an arbitrary entry (cheap and good
//! enough: hot statements come right back). Texts longer than [`MAX_CACHED_SQL_BYTES`] are
//! classified every time and never stored.
//!
//! Entries marked by [`Classifier::note_write`] (a replica rejected the text with 25006) override
//! classification and survive [`Classifier::set_catalog`], which clears everything else.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use super::cache_key::{cache_key, lexed_key, plain_key_into, InlineKey, INLINE_KEY_TEXT_BYTES};
use super::functions::{AllowList, FunctionCatalog, Resolver};
use super::key_hash::KeyHasher;
use super::{statement, Access, Class, Reason};

/// Longest statement text the cache stores.
pub const MAX_CACHED_SQL_BYTES: usize = 32 * 1024;

/// Number of independently locked cache shards.
const SHARDS: usize = 16;

/// A hasher for keys that already are hashes.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in so the hasher stays correct.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

struct Entry {
    /// The key's bytes (UTF-8: a raw key is `=` + the text, a normalised key a `cache_key`).
    text: Box<[u8]>,
    class: Arc<Class>,
    /// Set by `note_write`: kept when the catalog changes.
    noted: bool,
}

type Shard = HashMap<u64, Entry, BuildHasherDefault<PassThrough>>;

/// A statement's cache key and its hash.
struct Key<'a> {
    hash: u64,
    text: KeyText<'a>,
}

/// A text with nothing to normalise is keyed as it is (stored as `=` + text), so its repeats
/// (a driver's Parse of the same statement) hit after one hash, without lexing; any other text
/// by its normalised form ([`cache_key`], which never starts with `=`): borrowed from an
/// [`InlineKey`] on the caller's stack if it fits (the common case: a lookup that hits
/// allocates and moves nothing), else owned.
enum KeyText<'a> {
    /// The text's bytes (UTF-8).
    Raw(&'a [u8]),
    Normalised(Cow<'a, [u8]>),
}

impl KeyText<'_> {
    fn matches(&self, stored: &[u8]) -> bool {
        match self {
            KeyText::Raw(sql) => stored.strip_prefix(b"=") == Some(*sql),
            KeyText::Normalised(key) => stored == &**key,
        }
    }

    fn into_stored(self) -> Box<[u8]> {
        match self {
            KeyText::Raw(sql) => [b"=".as_slice(), sql].concat().into_boxed_slice(),
            KeyText::Normalised(key) => key.into_owned().into_boxed_slice(),
        }
    }
}

/// The normalised key of `sql` (`cache_key`'s): written into `buf` if it fits.
fn normalised<'a>(sql: &str, buf: &'a mut InlineKey) -> Cow<'a, [u8]> {
    if sql.len() <= INLINE_KEY_TEXT_BYTES {
        if plain_key_into(sql.as_bytes(), buf).is_some() {
            if let Some(key) = buf.as_bytes() {
                return Cow::Borrowed(key);
            }
        }
        return Cow::Owned(lexed_key(sql).into_bytes());
    }
    Cow::Owned(cache_key(sql).into_bytes())
}

/// Classifies statements with a bounded cache, the configured read-only functions, and the
/// function catalog. `&self` everywhere: share it through an `Arc`.
pub struct Classifier {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    hasher: KeyHasher,
    allow: AllowList,
    catalog: RwLock<Option<Arc<FunctionCatalog>>>,
    /// Bumped by every `set_catalog`: a classification made with an older catalog is not stored.
    catalog_generation: AtomicU64,
    /// Bumped after every change that can make `classify` answer differently for a text (a
    /// catalog change, a noted write, a clear): see [`Classifier::epoch`].
    epoch: AtomicU64,
    /// Classifications answered by the cache, and computed (for metrics).
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier").field("capacity", &(self.per_shard * SHARDS)).finish_non_exhaustive()
    }
}

impl Classifier {
    /// A classifier caching at most about `cache_entries` statements (0 disables the cache;
    /// the bound is rounded up to a multiple of the shard count). `read_only_functions` are
    /// `"schema.name"` or `"name"` entries treated as read-only whatever the catalog says.
    #[must_use]
    pub fn new(cache_entries: usize, read_only_functions: Vec<String>) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: cache_entries.div_ceil(SHARDS),
            hasher: KeyHasher::new(),
            allow: AllowList::new(&read_only_functions),
            catalog: RwLock::new(None),
            catalog_generation: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// (answered by the cache, computed) so far.
    #[must_use]
    pub fn cache_counts(&self) -> (u64, u64) {
        (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }

    /// A number that changes whenever `classify` may answer differently for some text than
    /// before (a catalog change, a noted write, a clear). A class got from `classify` after
    /// reading epoch `e` is what `classify` would give again for the same text while `epoch()`
    /// is still `e`: a caller that keeps the class with `e` may use it instead of classifying
    /// the same text again. (The one difference: a noted write evicted meanwhile, which a new
    /// lookup would no longer see, is still seen; eviction is arbitrary anyway.)
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Classify `sql`: from the cache if it is there, else classify and remember.
    ///
    /// The text is looked up as it is first (one hash): a Parse's text carries `$n` parameters,
    /// not literals, and is usually stored that way. A simple Query's is not: see
    /// [`Classifier::classify_query`].
    #[must_use]
    pub fn classify(&self, sql: &str) -> Arc<Class> {
        if self.cacheable(sql) {
            if let Some(class) = self.lookup(&self.raw_key(sql)) {
                return class;
            }
        }
        self.classify_keyed(sql, false)
    }

    /// [`Classifier::classify`] for the text of a simple Query, which has no parameters: its
    /// values are inlined as literals (pgbench, ORMs without server-side binding), so it is
    /// usually stored by its normalised key and a lookup of the text as it is would miss. The
    /// key is built first and looked up once, whichever form it has; the answer is the same.
    #[must_use]
    pub fn classify_query(&self, sql: &str) -> Arc<Class> {
        self.classify_keyed(sql, true)
    }

    /// [`Classifier::classify_query`] for a simple Query's text as it came (`None`: it is not
    /// UTF-8). A text of ASCII bytes only (the usual one) is UTF-8 without validating it, and
    /// is looked up by the key of its bytes: the key, and so the answer, is its `str`'s. Any
    /// other text, and a text not found, is validated first and classified as before.
    #[must_use]
    pub fn classify_query_text(&self, text: &[u8]) -> Option<Arc<Class>> {
        if text.is_ascii() {
            if let Some(class) = self.lookup_ascii(text) {
                return Some(class);
            }
        }
        let sql = std::str::from_utf8(text).ok()?;
        Some(self.classify_query(sql))
    }

    /// The cached class of the ASCII text `text`, if its key is quickly made (the scan does
    /// not decline it) and found; hits counted as `classify_keyed` counts them.
    fn lookup_ascii(&self, text: &[u8]) -> Option<Arc<Class>> {
        debug_assert!(text.is_ascii());
        if !self.cacheable_len(text.len()) || text.len() > INLINE_KEY_TEXT_BYTES {
            return None;
        }
        let mut buf = InlineKey::new();
        plain_key_into(text, &mut buf)?;
        let key = buf.as_bytes()?;
        // Never empty: a key starts with its hint mark.
        let (&first, rest) = key.split_first()?;
        let key = if first == b'-' && rest == text {
            self.raw_key_of(text)
        } else {
            Key { hash: self.hasher.hash(first, rest), text: KeyText::Normalised(Cow::Borrowed(key)) }
        };
        let class = self.lookup(&key)?;
        if matches!(key.text, KeyText::Normalised(_)) {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        Some(class)
    }

    /// Look `sql` up by its key (a raw key only if `raw_unseen`: not looked up yet), else
    /// classify and remember.
    fn classify_keyed(&self, sql: &str, raw_unseen: bool) -> Arc<Class> {
        let mut buf = InlineKey::new();
        let key = self.key(sql, &mut buf);
        if let Some(key) = key.as_ref().filter(|k| raw_unseen || matches!(k.text, KeyText::Normalised(_))) {
            if let Some(class) = self.lookup(key) {
                // Counted as before: a hit of the text as it is never was.
                if matches!(key.text, KeyText::Normalised(_)) {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                }
                return class;
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        // Read the generation before the catalog: if the catalog changes meanwhile, the result
        // is not stored (see `store`).
        let generation = self.catalog_generation.load(Ordering::Acquire);
        let class = Arc::new(self.classify_uncached(sql));
        if let Some(key) = key {
            self.store(key, Arc::clone(&class), Some(generation));
        }
        class
    }

    /// Classify without looking at or filling the cache (benchmarks, tests, tools).
    #[must_use]
    pub fn classify_uncached(&self, sql: &str) -> Class {
        let catalog = self.catalog.read().unwrap_or_else(PoisonError::into_inner).clone();
        statement::classify_text(sql, Resolver { catalog: catalog.as_deref(), allow: &self.allow })
    }

    /// Remember that this exact text is a write (a replica rejected it with SQLSTATE 25006),
    /// whatever classification says. Kept until evicted, even across catalog changes.
    pub fn note_write(&self, sql: &str) {
        let mut buf = InlineKey::new();
        let Some(key) = self.key(sql, &mut buf) else {
            return;
        };
        let mut class = self.classify_uncached(sql);
        class.access = Access::Write;
        class.reason = Reason::NotedWrite;
        self.store(key, Arc::new(class), None);
        // After the store: whoever reads the new epoch finds the noted write.
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Replace the function catalog; cached classifications (but not noted writes) are dropped.
    pub fn set_catalog(&self, catalog: FunctionCatalog) {
        *self.catalog.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(catalog));
        self.catalog_generation.fetch_add(1, Ordering::AcqRel);
        for shard in &self.shards {
            lock(shard).retain(|_, entry| entry.noted);
        }
        // Last: whoever reads the new epoch classifies with the new catalog.
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Drop every cached classification (noted writes included).
    pub fn clear(&self) {
        for shard in &self.shards {
            lock(shard).clear();
        }
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Number of cached statements.
    #[must_use]
    pub fn cached(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    fn cacheable(&self, sql: &str) -> bool {
        self.cacheable_len(sql.len())
    }

    fn cacheable_len(&self, len: usize) -> bool {
        self.per_shard > 0 && len <= MAX_CACHED_SQL_BYTES
    }

    /// The key `sql` is stored under (built in `buf` if it fits), or `None` if it is not cached
    /// at all.
    fn key<'a>(&self, sql: &'a str, buf: &'a mut InlineKey) -> Option<Key<'a>> {
        if !self.cacheable(sql) {
            return None;
        }
        let text = normalised(sql, buf);
        // Never empty: a key starts with its hint mark.
        let (&first, rest) = text.split_first()?;
        if first == b'-' && rest == sql.as_bytes() {
            return Some(self.raw_key(sql));
        }
        let hash = self.hasher.hash(first, rest);
        Some(Key { hash, text: KeyText::Normalised(text) })
    }

    /// `sql` keyed as it is.
    fn raw_key<'a>(&self, sql: &'a str) -> Key<'a> {
        self.raw_key_of(sql.as_bytes())
    }

    /// A UTF-8 text keyed as it is.
    fn raw_key_of<'a>(&self, sql: &'a [u8]) -> Key<'a> {
        Key { hash: self.hasher.hash(b'=', sql), text: KeyText::Raw(sql) }
    }

    fn shard(&self, key: u64) -> &Mutex<Shard> {
        // The low bits pick the shard; the map uses the whole hash.
        &self.shards[(key as usize) % SHARDS]
    }

    fn lookup(&self, key: &Key) -> Option<Arc<Class>> {
        let shard = lock(self.shard(key.hash));
        let entry = shard.get(&key.hash)?;
        key.text.matches(&entry.text).then(|| Arc::clone(&entry.class))
    }

    /// Store a classification made under catalog `generation`, or (`None`) a noted write.
    fn store(&self, key: Key, class: Arc<Class>, generation: Option<u64>) {
        let noted = generation.is_none();
        let mut shard = lock(self.shard(key.hash));
        // Checked under the shard lock: `set_catalog` bumps the generation before it clears the
        // shards, so a stale classification is either refused here or cleared there.
        if generation.is_some_and(|g| g != self.catalog_generation.load(Ordering::Acquire)) {
            return;
        }
        if let Some(existing) = shard.get(&key.hash) {
            // A noted write is not replaced by a fresh classification of the same text.
            if existing.noted && !noted && key.text.matches(&existing.text) {
                return;
            }
        } else if shard.len() >= self.per_shard {
            let victim = shard.keys().next().copied();
            if let Some(victim) = victim {
                shard.remove(&victim);
            }
        }
        let entry = Entry { text: key.text.into_stored(), class, noted };
        shard.insert(key.hash, entry);
        debug_assert!(shard.len() <= self.per_shard);
    }
}

/// Lock a shard; a panic elsewhere while holding it cannot leave a map half-updated in a way
/// that matters here, so poisoning is ignored.
fn lock(shard: &Mutex<Shard>) -> std::sync::MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::SessionEffect;

    #[test]
    fn caches_and_returns_the_same_class() {
        let c = Classifier::new(100, vec![]);
        let a = c.classify("SELECT 1");
        let b = c.classify("SELECT 1");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.access, Access::Read);
        assert_eq!(c.cached(), 1);
    }

    #[test]
    fn cache_is_bounded() {
        let c = Classifier::new(32, vec![]);
        for i in 0..1000 {
            let _ = c.classify(&format!("SELECT c{i}"));
        }
        assert!(c.cached() <= 32, "{}", c.cached());
        assert!(c.cached() > 0);
    }

    #[test]
    fn inlined_literals_and_request_comments_share_one_entry() {
        let c = Classifier::new(100, vec![]);
        let first = c.classify("SELECT abalance FROM pgbench_accounts WHERE aid = 1;");
        for i in 2..500 {
            let sql =
                format!("/* traceparent='00-{i:032x}-01' */ SELECT abalance FROM pgbench_accounts WHERE aid = {i};");
            assert!(Arc::ptr_eq(&first, &c.classify(&sql)), "{sql}");
            let tagged = format!("SELECT abalance FROM pgbench_accounts WHERE aid = {i}; /*controller='x{i}'*/");
            assert!(Arc::ptr_eq(&first, &c.classify(&tagged)), "{tagged}");
        }
        assert_eq!(c.cached(), 1);
    }

    #[test]
    fn a_text_with_nothing_to_normalise_is_keyed_as_it_is() {
        let c = Classifier::new(100, vec![]);
        let sql = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
        let mut buf = InlineKey::new();
        assert!(matches!(c.key(sql, &mut buf).unwrap().text, KeyText::Raw(_)));
        assert!(matches!(c.key("SELECT 1", &mut buf).unwrap().text, KeyText::Normalised(Cow::Borrowed(_))));
        assert!(matches!(c.key("SELECT a  FROM t", &mut buf).unwrap().text, KeyText::Normalised(_)));
        let first = c.classify(sql);
        assert!(c.lookup(&c.raw_key(sql)).is_some_and(|hit| Arc::ptr_eq(&hit, &first)));
        // The same statement with a comment is a separate (normalised) entry of the same class.
        assert_eq!(*c.classify(&format!("{sql} /* trace=1 */")), *first);
        assert_eq!(c.cached(), 2);
    }

    #[test]
    fn hints_keep_working_through_the_cache() {
        let c = Classifier::new(100, vec![]);
        assert_eq!(c.classify("INSERT INTO t VALUES (1)").hint, None);
        let hinted = c.classify("/* sluice: replica */ INSERT INTO t VALUES (2)");
        assert_eq!(hinted.hint, Some(crate::router::Hint::Replica));
        assert_eq!(
            c.classify("/* app=a */ /* SLUICE:primary */ INSERT INTO t VALUES (3)").hint,
            Some(crate::router::Hint::Primary)
        );
        assert_eq!(c.classify("/* app=b */ INSERT INTO t VALUES (4)").hint, None);
        assert_eq!(
            c.classify("/*sluice : replica*/ INSERT INTO t VALUES (5)").hint,
            Some(crate::router::Hint::Replica)
        );
        assert_eq!(c.cached(), 3);
    }

    #[test]
    fn a_key_built_on_the_stack_is_the_cache_key() {
        let mut texts: Vec<String> = [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;",
            "/* sluice: replica */ SELECT * FROM t WHERE name = 'it''s' AND x = .5",
            "SELECT 1 /* c\n */ + 2  ,  3",
            "SELECT E'x', $$y$$",
            "EXPLAIN SELECT 1",
            "SELECT 'unterminated",
            "SELECT héllo FROM t WHERE x = 'é'",
        ]
        .map(String::from)
        .into();
        // Around the stack buffer's bound: a key is one byte longer than a text without gaps.
        for len in INLINE_KEY_TEXT_BYTES - 2..=INLINE_KEY_TEXT_BYTES + 2 {
            let pad = len - "SELECT 1 AS ".len();
            texts.push(format!("SELECT 1 AS {}", "a".repeat(pad)));
            texts.push(format!("SELECT 1  AS {}", "b".repeat(pad.saturating_sub(1))));
        }
        for sql in &texts {
            assert_eq!(&*normalised(sql, &mut InlineKey::new()), cache_key(sql).as_bytes(), "{sql:?}");
        }
    }

    #[test]
    fn an_equal_hash_with_another_key_text_is_a_miss() {
        let c = Classifier::new(100, vec![]);
        let stored = c.classify_query("SELECT * FROM t WHERE id = 1");
        let (mut buf, mut other_buf) = (InlineKey::new(), InlineKey::new());
        let stored_key = c.key("SELECT * FROM t WHERE id = 2", &mut buf).unwrap();
        // Another statement's key under the stored one's hash, as a collision would give it.
        let other =
            Key { hash: stored_key.hash, text: c.key("DELETE FROM t WHERE id = 1", &mut other_buf).unwrap().text };
        assert!(c.lookup(&other).is_none());
        assert!(c.lookup(&stored_key).is_some_and(|hit| Arc::ptr_eq(&hit, &stored)));
    }

    #[test]
    fn zero_entries_disables_the_cache() {
        let c = Classifier::new(0, vec![]);
        assert_eq!(c.classify("SELECT 1").access, Access::Read);
        c.note_write("SELECT 1");
        assert_eq!(c.cached(), 0);
    }

    #[test]
    fn huge_statements_are_not_cached() {
        let c = Classifier::new(10, vec![]);
        let sql = format!("SELECT '{}'", "x".repeat(MAX_CACHED_SQL_BYTES));
        assert_eq!(c.classify(&sql).access, Access::Read);
        assert_eq!(c.cached(), 0);
    }

    #[test]
    fn note_write_overrides_and_survives_catalog() {
        let c = Classifier::new(100, vec![]);
        assert_eq!(c.classify("SELECT * FROM v").access, Access::Read);
        let _ = c.classify("SELECT 2");
        c.note_write("SELECT * FROM v");
        let class = c.classify("SELECT * FROM v");
        assert_eq!((class.access, class.reason), (Access::Write, Reason::NotedWrite));
        c.set_catalog(FunctionCatalog::default());
        assert_eq!(c.cached(), 1);
        assert_eq!(c.classify("SELECT * FROM v").reason, Reason::NotedWrite);
        c.clear();
        assert_eq!(c.classify("SELECT * FROM v").access, Access::Read);
    }

    #[test]
    fn a_query_text_is_answered_as_classify_answers_it() {
        let c = Classifier::new(100, vec![]);
        let texts = [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1;",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 2;",
            "SELECT * FROM v",
            "BEGIN",
            "/* app=a */ SELECT * FROM v WHERE id = 3",
            "PREPARE p AS SELECT * FROM v WHERE id = $1",
        ];
        for sql in texts {
            let query = c.classify_query(sql);
            assert!(Arc::ptr_eq(&query, &c.classify(sql)), "{sql}");
            assert!(Arc::ptr_eq(&query, &c.classify_query(sql)), "{sql}");
        }
        // Stored by a classification of either kind, found by the other.
        assert!(Arc::ptr_eq(&c.classify("SELECT * FROM w"), &c.classify_query("SELECT * FROM w")));
        c.note_write("SELECT * FROM v");
        assert_eq!(c.classify_query("SELECT * FROM v").reason, Reason::NotedWrite);
        c.note_write("UPDATE v SET a = 1 WHERE id = 4");
        assert_eq!(c.classify_query("UPDATE v SET a = 2 WHERE id = 5").reason, Reason::NotedWrite);
    }

    #[test]
    fn the_epoch_moves_with_every_change_of_answers() {
        let c = Classifier::new(100, vec![]);
        let mut last = c.epoch();
        let _ = c.classify("SELECT * FROM v");
        assert_eq!(c.epoch(), last, "a classification changes no answer");
        let mut moved = |what: &str| {
            let now = c.epoch();
            assert_ne!(now, last, "{what}");
            last = now;
        };
        c.note_write("SELECT * FROM v");
        moved("a noted write");
        c.set_catalog(FunctionCatalog::default());
        moved("a catalog change");
        c.clear();
        moved("a clear");
    }

    #[test]
    fn classification_under_an_old_catalog_is_not_stored() {
        let c = Classifier::new(100, vec![]);
        let generation = c.catalog_generation.load(Ordering::Acquire);
        let stale = Arc::new(c.classify_uncached("SELECT f()"));
        c.set_catalog(FunctionCatalog::from_rows([("public".into(), "f".into(), 'i')]));
        c.store(c.key("SELECT f()", &mut InlineKey::new()).unwrap(), stale, Some(generation));
        assert_eq!(c.cached(), 0);
        assert_eq!(c.classify("SELECT f()").access, Access::Read);
    }

    #[test]
    fn catalog_and_allow_list() {
        let c = Classifier::new(100, vec!["audit.peek".into()]);
        assert_eq!(c.classify("SELECT f(1)").reason, Reason::UnknownFunction);
        assert_eq!(c.classify("SELECT audit.peek(1)").access, Access::Read);
        assert_eq!(c.classify("SELECT other.peek(1)").access, Access::Write);
        c.set_catalog(FunctionCatalog::from_rows([
            ("public".to_string(), "f".to_string(), 's'),
            ("public".to_string(), "g".to_string(), 'v'),
        ]));
        assert_eq!(c.classify("SELECT f(1)").access, Access::Read);
        assert_eq!(c.classify("SELECT public.f(1)").access, Access::Read);
        assert_eq!(c.classify("SELECT g(1)").reason, Reason::VolatileFunction);
        assert_eq!(c.classify("SELECT x.f(1)").reason, Reason::UnknownFunction);
        let lock = c.classify("SELECT pg_advisory_lock(1)");
        assert_eq!(lock.session, SessionEffect::Pin);
    }

    #[test]
    fn shared_between_threads() {
        let c = Arc::new(Classifier::new(64, vec![]));
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let c = Arc::clone(&c);
                std::thread::spawn(move || {
                    for i in 0..200 {
                        let sql = format!("SELECT c{}", (i * 7 + t) % 100);
                        assert_eq!(c.classify(&sql).access, Access::Read);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert!(c.cached() <= 64);
    }

    /// A Query's text as bytes gets the class its `str` gets, from the same entry; a text
    /// that is not UTF-8 gets none (the caller treats it as an unknown statement), even where
    /// its bytes would make the key of a cached text (a string's bytes become a placeholder).
    #[test]
    fn a_query_text_as_bytes_is_classified_as_its_str() {
        let c = Classifier::new(100, vec![]);
        for sql in [
            "SELECT * FROM t WHERE name = 'a'",
            "UPDATE t SET a = a + -5 WHERE id = 12345;",
            "SELECT 1",
            "BEGIN;",
            "/* sluice: replica */ SELECT * FROM t WHERE id = 4",
            "SELECT 'ü', é FROM t",
            "EXPLAIN SELECT 1",
        ] {
            let by_str = c.classify_query(sql);
            let by_bytes = c.classify_query_text(sql.as_bytes()).unwrap();
            assert!(Arc::ptr_eq(&by_str, &by_bytes), "{sql}");
        }
        let (hits, misses) = c.cache_counts();
        assert_eq!(misses, 7);
        // Every text but `BEGIN;` and the EXPLAIN (keyed as they are: not counted) hit by its
        // normalised key.
        assert_eq!(hits, 5);
        // `SELECT * FROM t WHERE name = 'a'` is cached; a string of an invalid byte keys alike.
        assert!(c
            .classify_query_text(&[b"SELECT * FROM t WHERE name = '".as_slice(), &[0xff], b"'"].concat())
            .is_none());
        assert!(c.classify_query_text(&[b"SELECT 1".as_slice(), &[0xc3]].concat()).is_none());
    }
}
