//! One statement classifier per database: function volatility lives in each database's own
//! `pg_proc`, so a function is judged by the catalog of the database the client uses. A
//! classifier is created on the database's first session and its catalog loaded in the
//! background (until then unknown functions go to the primary, which is always safe); DDL
//! through sluice reloads it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::backend::conn::columns;
use crate::backend::{PoolKey, Pools, ServerConn};
use crate::config::Config;
use crate::keyed_hash::KeyedState;
use crate::live::Live;
use crate::router::{Classifier, FunctionCatalog};
use crate::topology::TopologyHandle;

const CATALOG_SQL: &str = "SELECT n.nspname, p.proname, p.provolatile FROM pg_catalog.pg_proc p \
                           JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace";

struct Entry {
    classifier: Arc<Classifier>,
    loading: Arc<AtomicBool>,
    /// The user whose session created it (loads the catalog on reload).
    user: String,
}

fn sum_counts<'a>(entries: impl Iterator<Item = &'a Entry>) -> (u64, u64) {
    entries.map(|e| e.classifier.cache_counts()).fold((0, 0), |(h, m), (a, b)| (h + a, m + b))
}

/// Classifiers by database.
pub struct Classifiers {
    config: Arc<Live<Config>>,
    pools: Arc<Pools>,
    topology: TopologyHandle,
    /// Hashed with [`KeyedState`]: every session looks its database up here at login.
    by_database: Mutex<HashMap<String, Entry, KeyedState>>,
    /// Cache counts of classifiers dropped by [`Classifiers::clear`], so totals only grow.
    retired: Mutex<(u64, u64)>,
}

impl Classifiers {
    /// No classifiers yet.
    #[must_use]
    pub fn new(config: Arc<Live<Config>>, pools: Arc<Pools>, topology: TopologyHandle) -> Self {
        Self { config, pools, topology, by_database: Mutex::new(HashMap::default()), retired: Mutex::default() }
    }

    /// The classifier for `database`, created (and its catalog load started) on first use.
    pub fn get(&self, database: &str, user: &str) -> Arc<Classifier> {
        let mut map = self.by_database.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(e) = map.get(database) {
            return Arc::clone(&e.classifier);
        }
        let r = &self.config.routing;
        let entry = Entry {
            classifier: Arc::new(Classifier::new(r.classify_cache_entries, r.read_only_functions.clone())),
            loading: Arc::default(),
            user: user.to_string(),
        };
        let classifier = Arc::clone(&entry.classifier);
        self.spawn_load(database, user, &entry);
        map.insert(database.to_string(), entry);
        classifier
    }

    /// Reload `database`'s catalog (after DDL); a load already running is enough.
    pub fn refresh(&self, database: &str, user: &str) {
        let map = self.by_database.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(e) = map.get(database) {
            self.spawn_load(database, user, e);
        }
    }

    /// Forget every classifier (the routing options changed): sessions that start later get
    /// one built from the current configuration; running sessions keep theirs.
    pub fn clear(&self) {
        let mut map = self.by_database.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (hits, misses) = sum_counts(map.values());
        let mut retired = self.retired.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *retired = (retired.0 + hits, retired.1 + misses);
        map.clear();
    }

    /// Classification cache (hits, misses) over every classifier this proxy has had.
    pub fn cache_counts(&self) -> (u64, u64) {
        let map = self.by_database.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (hits, misses) = sum_counts(map.values());
        let retired = *self.retired.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (retired.0 + hits, retired.1 + misses)
    }

    /// Reload every database's catalog (on SIGHUP).
    pub fn refresh_all(&self) {
        let map = self.by_database.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (database, e) in map.iter() {
            self.spawn_load(database, &e.user, e);
        }
    }

    fn spawn_load(&self, database: &str, user: &str, entry: &Entry) {
        if entry.loading.swap(true, Ordering::AcqRel) {
            return;
        }
        let topology = self.topology.load();
        // Every node has the same catalog: prefer the primary, else any replica.
        let Some(node) = topology.primary().or_else(|| topology.replicas().next()).map(|n| n.index) else {
            entry.loading.store(false, Ordering::Release);
            return;
        };
        let key = PoolKey { node, database: database.to_string(), user: user.to_string() };
        let spec = self.pools.spec(&key, self.config.pool.connect_timeout);
        let classifier = Arc::clone(&entry.classifier);
        let loading = Arc::clone(&entry.loading);
        let database = database.to_string();
        tokio::spawn(async move {
            let rows = match ServerConn::connect(&spec).await {
                Ok(mut conn) => conn.run_internal(CATALOG_SQL).await,
                Err(e) => Err(e),
            };
            match rows {
                Ok(rows) => {
                    let entries = rows.iter().filter_map(|r| match columns(r).as_slice() {
                        [Some(s), Some(n), Some(v)] => Some((s.clone(), n.clone(), v.chars().next().unwrap_or('v'))),
                        _ => None,
                    });
                    classifier.set_catalog(FunctionCatalog::from_rows(entries));
                    tracing::debug!(%database, "function catalog loaded");
                }
                Err(e) => tracing::warn!(%database, error = %e, "cannot load the function catalog"),
            }
            loading.store(false, Ordering::Release);
        });
    }
}
