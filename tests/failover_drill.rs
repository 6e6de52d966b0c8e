//! The failover drill as a test: kill the primary, promote replica 1, leave replica 2 following
//! the dead primary, restart the old primary as a primary. Writes are held through the switch,
//! the old primary is fenced by its older timeline, the orphan serves no reads.

mod drill;

use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn failover_loses_no_acknowledged_write_fails_no_read_and_fences_the_old_primary() {
    let opts = drill::Options {
        promote_after: Duration::from_secs(1),
        phase: Duration::from_millis(1500),
        every: Duration::from_millis(50),
        monitor_interval: "100ms",
    };
    let f = drill::run(&opts).await;
    eprintln!("{f}\nerrors: {:?}", f.errors);
    assert_eq!(f.lost_writes, 0, "acknowledged writes lost: {f}");
    assert!(f.failed_writes_in_flight <= 1, "more than the write in flight failed: {f}\n{:?}", f.errors);
    assert_eq!(f.failed_writes_after, 0, "writes sent after the kill failed instead of being held: {:?}", f.errors);
    assert_eq!(f.failed_reads, 0, "reads failed: {:?}", f.errors);
    assert_eq!(f.closed_sessions, 0, "client connections were closed");
    assert!(f.first_write_after_promotion.is_some(), "no write succeeded on the new primary: {f}");
    assert_eq!(f.stale_reads, 0, "reads ran on the orphan or the fenced node after the promotion: {f}");
    assert_eq!(f.statements_on_fenced, 0, "statements ran on the old primary after the kill: {f}");
    assert!(f.fenced_in_topology, "/topology did not show the old primary fenced");
    assert!(f.writes_ok > 20 && f.reads_ok > 20, "the workload barely ran: {f}");
}
