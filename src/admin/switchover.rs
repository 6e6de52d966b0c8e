//! `POST /switchover {"target": "<node>"}`: a planned change of primary with no lost and no
//! failed writes.
//!
//! 1. Check: there is a primary, the target is a readable replica whose replay is not paused.
//! 2. Hold new writes (the monitor excludes the primary; sessions wait in the failover hold).
//! 3. Wait until no unit runs on the old primary, read its WAL position, and wait until the
//!    target has replayed it. Running out of `failover.switchover_timeout` before this point
//!    releases the hold: nothing changed.
//! 4. `pg_promote()` the target. The old primary, now on an older timeline, is fenced by the
//!    monitor; once the snapshot shows the target as primary, release the held writes.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::failover::{find_or_refuse, node_json, refuse, reply, FailoverAdmin, Refusal, RefusalKind};
use crate::backend::conn::parse_lsn;
use crate::topology::{NodeView, Role};

/// A switchover that happened.
#[derive(Clone, Debug)]
pub struct Switched {
    /// The old primary as the monitor shows it afterwards (fenced).
    pub old: NodeView,
    /// The new primary.
    pub new: NodeView,
    /// From the start until the target had replayed the old primary's WAL.
    pub caught_up: Duration,
    /// How long writes were held.
    pub writes_held: Duration,
}

pub(super) async fn switchover(State(ops): State<FailoverAdmin>, body: String) -> Response {
    let target = match serde_json::from_str::<serde_json::Value>(&body) {
        Ok(v) => v.get("target").and_then(|t| t.as_str()).map(str::to_string),
        Err(_) => None,
    };
    let Some(target) = target else {
        return refuse(StatusCode::BAD_REQUEST, "the body must be JSON like {\"target\": \"<node name>\"}");
    };
    match ops.switchover(&target).await {
        Ok(s) => reply(
            StatusCode::OK,
            &json!({
                "ok": true, "old_primary": node_json(&s.old), "new_primary": node_json(&s.new),
                "caught_up_ms": s.caught_up.as_millis(), "writes_held_ms": s.writes_held.as_millis(),
            }),
        ),
        Err(refusal) => refusal.response(),
    }
}

impl FailoverAdmin {
    /// A planned change of primary to the replica called `target` (see the module's steps).
    ///
    /// # Errors
    /// Nothing changed (unknown target, not caught up, timed out: writes released), or the
    /// promotion failed.
    pub async fn switchover(&self, target: &str) -> Result<Switched, Refusal> {
        let Ok(_one_at_a_time) = self.busy.try_lock() else {
            return Err(Refusal::new(RefusalKind::NotNow, "another switchover is in progress"));
        };
        let started = Instant::now();
        let (old, new) = check(self, target).await?;
        self.control.update(|o| o.hold_writes = true);
        let caught_up = catch_up(self, &old, &new, started).await;
        let caught_up_time = started.elapsed();
        if let Err(refusal) = caught_up {
            self.control.update(|o| o.hold_writes = false);
            tracing::warn!(target = %new.name, reason = %refusal.reason, "switchover refused; writes released, nothing changed");
            return Err(refusal);
        }
        let promoted = promote(self, &new).await;
        self.control.update(|o| o.hold_writes = false);
        let (_, t) = self.wait_until(self.settle_time(), |t| t.primary().is_some_and(|p| p.index == new.index)).await;
        let writes_held = started.elapsed();
        if let Err(refusal) = promoted {
            return Err(Refusal::new(refusal.kind, format!("promoting {} failed: {}", new.name, refusal.reason)));
        }
        tracing::info!(old = %old.name, new = %new.name, held_ms = writes_held.as_millis(), "switchover done");
        Ok(Switched {
            old: t.nodes[old.index].clone(),
            new: t.nodes[new.index].clone(),
            caught_up: caught_up_time,
            writes_held,
        })
    }
}

/// The current primary and the target, if a switchover to it may start.
async fn check(ops: &FailoverAdmin, target: &str) -> Result<(NodeView, NodeView), Refusal> {
    let conflict = |why: String| Refusal::new(RefusalKind::NotNow, why);
    let t = ops.topology.load();
    let new = find_or_refuse(&t, target)?;
    let old = t.primary().cloned().ok_or_else(|| conflict(t.no_primary_cause()))?;
    if new.role != Role::Replica || new.excluded.is_some() {
        let why = new.excluded.map_or(new.role.as_str(), |e| e.as_str());
        return Err(conflict(format!("{target} is not a streaming replica that is caught up ({why})")));
    }
    let paused = ops.probe().command(new.index, "SELECT pg_catalog.pg_is_wal_replay_paused()", step_timeout(ops)).await;
    match paused {
        Ok(Some(v)) if v == "f" => Ok((old, new)),
        Ok(_) => Err(conflict(format!("{target} has WAL replay paused (pg_wal_replay_pause)"))),
        Err(e) => Err(conflict(format!("cannot ask {target}: {e}"))),
    }
}

fn step_timeout(ops: &FailoverAdmin) -> Duration {
    ops.config.monitor.probe_timeout.max(ops.config.pool.connect_timeout)
}

/// With writes held: wait for the old primary to go quiet and the target to replay its WAL.
async fn catch_up(ops: &FailoverAdmin, old: &NodeView, new: &NodeView, started: Instant) -> Result<(), Refusal> {
    let limit = ops.config.failover.switchover_timeout;
    let late = |what: String| Refusal::new(RefusalKind::NotNow, format!("{what} within {} ms", limit.as_millis()));
    let left = || limit.saturating_sub(started.elapsed());
    let (held, _) = ops.wait_until(left(), |t| t.primary().is_none()).await;
    if !held {
        return Err(late("the monitor did not hold writes".into()));
    }
    // A session that routed on the snapshot before the hold takes its pool permit right after;
    // give it that moment, so that "nothing checked out" below means no unit is on its way.
    tokio::time::sleep(ops.config.monitor.interval).await;
    while ops.pools.checked_out(old.index) > 0 {
        if left().is_zero() {
            return Err(late(format!("units still running on {} did not finish", old.name)));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The insert position: with synchronous_commit = off an acknowledged commit may not be
    // written out yet, and the write position would stop short of it.
    let lsn_sql = "SELECT pg_catalog.pg_current_wal_insert_lsn()";
    let want = lsn(ops, old, lsn_sql).await?;
    loop {
        let seen = lsn(ops, new, "SELECT pg_catalog.pg_last_wal_replay_lsn()").await?;
        if replayed_up_to(seen, want) {
            return Ok(());
        }
        if left().is_zero() {
            return Err(late(format!("{} did not replay {}'s WAL position", new.name, old.name)));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// WAL page size, and the sizes of the short and the long (segment start) page headers.
const WAL_PAGE: u64 = 8192;
const SHORT_PAGE_HEADER: u64 = 24;
const LONG_PAGE_HEADER: u64 = 40;

/// True if a replica whose replay ended at `seen` has everything up to the insert position
/// `want`. An insert position right at the start of a page points past the page header (no
/// record can end there), while replay stops at the end of the last record, the page boundary:
/// an idle primary whose last record filled its page would otherwise never look caught up.
fn replayed_up_to(seen: u64, want: u64) -> bool {
    let offset = want % WAL_PAGE;
    let want = if offset == SHORT_PAGE_HEADER || offset == LONG_PAGE_HEADER { want - offset } else { want };
    seen >= want
}

async fn lsn(ops: &FailoverAdmin, node: &NodeView, sql: &str) -> Result<u64, Refusal> {
    let answer = ops.probe().command(node.index, sql, step_timeout(ops)).await;
    let fail =
        |why: String| Refusal::new(RefusalKind::NotNow, format!("cannot read {}'s WAL position: {why}", node.name));
    match answer {
        Ok(Some(text)) => parse_lsn(&text).ok_or_else(|| fail(text)),
        Ok(None) => Err(fail("no answer".into())),
        Err(e) => Err(fail(e.to_string())),
    }
}

/// Promote the target and wait until the monitor shows it as the primary (still held).
async fn promote(ops: &FailoverAdmin, new: &NodeView) -> Result<(), Refusal> {
    let wait_s = ops.config.failover.switchover_timeout.as_secs().max(1);
    let sql = format!("SELECT pg_catalog.pg_promote(true, {wait_s})");
    let limit = ops.config.failover.switchover_timeout + step_timeout(ops);
    match ops.probe().command(new.index, &sql, limit).await {
        Ok(Some(v)) if v == "t" => {}
        Ok(other) => return Err(Refusal::new(RefusalKind::Failed, format!("pg_promote answered {other:?}"))),
        Err(e) => return Err(Refusal::new(RefusalKind::Failed, e.to_string())),
    }
    let shown = |t: &crate::topology::Topology| {
        t.nodes[new.index].role == Role::Primary && t.nodes.iter().filter(|n| n.role == Role::Primary).count() == 1
    };
    ops.wait_until(ops.settle_time(), shown).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::replayed_up_to;

    #[test]
    fn caught_up_means_replayed_the_insert_position_less_a_bare_page_header() {
        let page = 0x300_0000_u64;
        let cases = [
            (page + 0x100, page + 0x100, true),
            (page + 0xF8, page + 0x100, false),
            (page, page + 24, true),
            (page, page + 40, true),
            (page - 8, page + 24, false),
            (page, page + 48, false),
        ];
        for (seen, want, caught_up) in cases {
            assert_eq!(replayed_up_to(seen, want), caught_up, "seen {seen:#x}, want {want:#x}");
        }
    }
}
