//! Table tests of the pure transition: (state, event) -> state.

use std::time::{Duration, Instant};

use super::*;
use crate::topology::{Topology, TopologyHandle};

const LIMITS: Limits = Limits { down_after: 3, max_lag_bytes: Some(1000), max_lag: Some(Duration::from_secs(10)) };

fn nodes(n: usize) -> Vec<NodeView> {
    (0..n)
        .map(|index| NodeView {
            index,
            name: format!("n{index}"),
            host: "127.0.0.1".into(),
            port: 5000 + index as u16,
            role: Role::Unknown,
            weight: 1,
            wal_lsn: None,
            excluded: Some(Excluded::Unprobed),
            timeline: None,
            replay_lag: None,
        })
        .collect()
}

fn primary(lsn: u64, timeline: u32) -> Outcome {
    Outcome::Seen(Observation {
        in_recovery: false,
        wal_lsn: Some(lsn),
        timeline: Some(timeline),
        system_id: Some(7),
        receiver: None,
        replay_lag: None,
    })
}

/// A replica at `lsn` streaming from node `from` (None: no WAL receiver).
fn replica(lsn: u64, from: Option<usize>, timeline: u32) -> Outcome {
    Outcome::Seen(Observation {
        in_recovery: true,
        wal_lsn: Some(lsn),
        timeline: Some(timeline),
        system_id: Some(7),
        receiver: from.map(|i| Receiver {
            streaming: Some(true),
            sender_host: Some("/tmp/run".into()),
            sender_port: Some(5000 + i as u16),
            timeline: Some(timeline),
        }),
        replay_lag: Some(Duration::from_millis(250)),
    })
}

/// Runs ticks and keeps what they produce.
struct Run {
    memory: Memory,
    view: Vec<NodeView>,
    overrides: Overrides,
    limits: Limits,
    now: Instant,
}

impl Run {
    fn new(n: usize) -> Self {
        Run {
            memory: Memory::default(),
            view: nodes(n),
            overrides: Overrides::default(),
            limits: LIMITS,
            now: Instant::now(),
        }
    }

    fn tick(&mut self, outcomes: &[Outcome]) -> Vec<(Role, Option<Excluded>)> {
        self.now += Duration::from_millis(250);
        let (memory, view) = step(&self.memory, &self.view, outcomes, &self.overrides, &self.limits, self.now);
        self.memory = memory;
        self.view = view;
        self.view.iter().map(|n| (n.role, n.excluded)).collect()
    }
}

use Excluded as X;
use Role::{Down, Fenced, Primary as P, Replica as R, Stale};

#[test]
fn health_steps() {
    use Health::{Down as D, Suspect as S, Unprobed as U, Up};
    let seen = replica(1, None, 1);
    let refused = Outcome::Refused("refused".into());
    let table: &[(Health, &Outcome, u32, Health)] = &[
        (U, &seen, 3, Up),
        (D, &seen, 3, Up),
        (S(2), &seen, 3, Up),
        (Up, &refused, 3, D),
        (S(1), &refused, 3, D),
        (Up, &Outcome::TimedOut, 3, S(1)),
        (U, &Outcome::TimedOut, 3, S(1)),
        (S(1), &Outcome::TimedOut, 3, S(2)),
        (S(2), &Outcome::TimedOut, 3, D),
        (D, &Outcome::TimedOut, 3, D),
        (Up, &Outcome::TimedOut, 1, D),
    ];
    for &(from, event, down_after, to) in table {
        assert_eq!(from.step(event, down_after), to, "{from:?} + {event:?} (down_after {down_after})");
    }
}

#[test]
fn a_healthy_cluster_has_one_primary_and_readable_replicas() {
    let mut run = Run::new(3);
    let roles = run.tick(&[primary(100, 1), replica(100, Some(0), 1), replica(90, Some(0), 1)]);
    assert_eq!(roles, [(P, None), (R, None), (R, None)]);
    assert_eq!(run.memory.system_id, Some(7));
}

#[test]
fn a_replicas_replay_lag_in_time_reaches_its_view_and_a_primary_has_none() {
    let mut run = Run::new(2);
    let primary_claiming_lag = match primary(100, 1) {
        Outcome::Seen(o) => Outcome::Seen(Observation { replay_lag: Some(Duration::from_secs(9)), ..o }),
        other => other,
    };
    // The replica is behind everything the monitor has seen of the primary: its own word.
    run.tick(&[primary_claiming_lag, replica(90, Some(0), 1)]);
    let lags: Vec<_> = run.view.iter().map(|n| n.replay_lag).collect();
    assert_eq!(lags, [None, Some(Duration::from_millis(250))]);
    // It has replayed the primary's position: whatever it says in passing, it is not behind.
    run.tick(&[primary(100, 1), replica(100, Some(0), 1)]);
    assert_eq!(run.view[1].replay_lag, Some(Duration::ZERO));
    // Within the monitor's history: bounded by when the primary had what it lacks.
    run.tick(&[primary(110, 1), replica(100, Some(0), 1)]);
    let saying = |secs| match replica(100, Some(0), 1) {
        Outcome::Seen(o) => Outcome::Seen(Observation { replay_lag: Some(Duration::from_secs(secs)), ..o }),
        other => other,
    };
    run.tick(&[primary(110, 1), saying(60)]);
    assert_eq!(run.view[1].replay_lag, Some(Duration::from_millis(250)), "the primary reached 110 one tick ago");
}

#[test]
fn one_timeout_changes_nothing_and_down_after_timeouts_take_the_node_down() {
    let mut run = Run::new(2);
    let healthy = [primary(100, 1), replica(100, Some(0), 1)];
    let before = run.tick(&healthy);
    for _ in 0..2 {
        assert_eq!(run.tick(&[Outcome::TimedOut, replica(100, Some(0), 1)]), before);
    }
    assert_eq!(run.tick(&[Outcome::TimedOut, replica(100, Some(0), 1)])[0], (Down, Some(X::Down)));
    // One answer brings it back.
    assert_eq!(run.tick(&healthy), before);
}

#[test]
fn a_refused_connection_and_a_primary_in_recovery_act_at_once() {
    let mut run = Run::new(2);
    run.tick(&[primary(100, 1), replica(100, Some(0), 1)]);
    let roles = run.tick(&[Outcome::Refused("connection refused".into()), replica(100, None, 1)]);
    assert_eq!(roles, [(Down, Some(X::Down)), (R, None)], "without a primary a replica still serves reads");
    let mut run = Run::new(2);
    run.tick(&[primary(100, 1), replica(100, Some(0), 1)]);
    assert_eq!(run.tick(&[replica(100, Some(1), 2), primary(100, 2)]), [(R, None), (P, None)]);
}

#[test]
fn failover_orphan_and_split_brain_by_timeline() {
    let mut run = Run::new(3);
    run.tick(&[primary(100, 1), replica(100, Some(0), 1), replica(100, Some(0), 1)]);
    let down = Outcome::Refused("refused".into());
    // Killed: both replicas serve reads (nothing better), no primary.
    assert_eq!(run.tick(&[down.clone(), replica(100, None, 1), replica(100, None, 1)])[1..], [(R, None), (R, None)]);
    // Node 1 promoted: node 2 still looks for node 0 and is not streaming.
    let roles = run.tick(&[down.clone(), primary(120, 2), replica(100, None, 1)]);
    assert_eq!(roles, [(Down, Some(X::Down)), (P, None), (Stale, Some(X::NotStreaming))]);
    // Node 0 restarted as a primary on timeline 1; node 2 streams from it.
    let split = [primary(110, 1), primary(130, 2), replica(110, Some(0), 1)];
    let roles = run.tick(&split);
    assert_eq!(roles, [(Fenced, Some(X::OlderTimeline)), (P, None), (Stale, Some(X::UpstreamFenced))]);
    // Sticky: with node 1 gone too, node 0 is still fenced and writes are refused.
    let roles = run.tick(&[primary(110, 1), down, replica(110, Some(0), 1)]);
    assert_eq!(roles, [(Fenced, Some(X::OlderTimeline)), (Down, Some(X::Down)), (Stale, Some(X::UpstreamFenced))]);
    // Back in recovery, following the new primary: the fence ends by itself.
    let roles = run.tick(&[replica(130, Some(1), 2), primary(130, 2), replica(110, Some(0), 1)]);
    assert_eq!(roles[..2], [(R, None), (P, None)]);
    assert_eq!(roles[2], (Stale, Some(X::UpstreamUnknown)));
}

#[test]
fn equal_timelines_put_both_claimants_in_doubt() {
    let mut run = Run::new(4);
    let mut streaming_from_1 = replica(100, Some(1), 1);
    if let Outcome::Seen(o) = &mut streaming_from_1 {
        o.receiver.as_mut().unwrap().sender_port = Some(5001);
    }
    let roles = run.tick(&[primary(100, 1), primary(100, 1), streaming_from_1, replica(100, None, 1)]);
    assert_eq!(
        roles,
        [
            (P, Some(X::InDoubt)),
            (P, Some(X::InDoubt)),
            (Stale, Some(X::UpstreamInDoubt)),
            (Stale, Some(X::UpstreamInDoubt))
        ]
    );
    let t = Topology { generation: 1, nodes: run.view.clone() };
    assert!(t.primary().is_none());
    assert!(t.no_primary_cause().contains("primary_in_doubt"), "{}", t.no_primary_cause());
}

#[test]
fn an_operator_can_unfence_once_no_newer_primary_is_alive() {
    let mut run = Run::new(2);
    run.tick(&[primary(100, 1), primary(100, 2)]);
    assert_eq!(run.view[0].role, Fenced);
    run.overrides.unfence.insert(0);
    assert_eq!(run.tick(&[primary(100, 1), primary(100, 2)])[0], (Fenced, Some(X::OlderTimeline)));
    let down = Outcome::Refused("refused".into());
    run.overrides.unfence.clear();
    assert_eq!(run.tick(&[primary(100, 1), down.clone()])[0], (Fenced, Some(X::OlderTimeline)));
    run.overrides.unfence.insert(0);
    assert_eq!(run.tick(&[primary(100, 1), down])[0], (P, None));
}

#[test]
fn a_node_of_another_cluster_is_refused() {
    let mut run = Run::new(2);
    let mut stranger = primary(5, 1);
    if let Outcome::Seen(o) = &mut stranger {
        o.system_id = Some(99);
    }
    assert_eq!(run.tick(&[primary(100, 1), stranger]), [(P, None), (Fenced, Some(X::ForeignSystem))]);
}

#[test]
fn replicas_lagging_by_bytes_or_time_serve_no_reads_and_come_back() {
    let mut run = Run::new(2);
    run.limits.max_lag = Some(Duration::from_secs(1));
    run.tick(&[primary(100, 1), replica(100, Some(0), 1)]);
    assert_eq!(run.tick(&[primary(2000, 1), replica(100, Some(0), 1)])[1], (Stale, Some(X::LagBytes)));
    run.limits.max_lag_bytes = None;
    // Behind by little, but for longer than a second: stale by time.
    let mut roles = Vec::new();
    for lsn in 2001..2010 {
        roles = run.tick(&[primary(lsn, 1), replica(2000, Some(0), 1)]);
    }
    assert_eq!(roles[1], (Stale, Some(X::LagTime)));
    assert_eq!(run.tick(&[primary(2010, 1), replica(2010, Some(0), 1)])[1], (R, None));
    // An idle primary: a replica that has everything is not behind, however old the samples.
    for _ in 0..20 {
        roles = run.tick(&[primary(2010, 1), replica(2010, Some(0), 1)]);
    }
    assert_eq!(roles[1], (R, None));
    assert!(run.memory.samples.len() <= 2, "{:?}", run.memory.samples);
}

#[test]
fn drained_replicas_and_a_switchover_hold_take_effect() {
    let mut run = Run::new(2);
    let healthy = [primary(100, 1), replica(100, Some(0), 1)];
    run.tick(&healthy);
    run.overrides.drained.insert(1);
    run.overrides.hold_writes = true;
    assert_eq!(run.tick(&healthy), [(P, Some(X::Switchover)), (Stale, Some(X::Drained))]);
    run.overrides = Overrides::default();
    assert_eq!(run.tick(&healthy), [(P, None), (R, None)]);
}

#[test]
fn wal_positions_alone_do_not_move_the_generation() {
    let mut run = Run::new(2);
    let handle = TopologyHandle::new(Topology { generation: 0, nodes: run.view.clone() });
    run.tick(&[primary(100, 1), replica(100, Some(0), 1)]);
    assert!(handle.publish_nodes(run.view.clone()));
    let generation = handle.load().generation;
    for lsn in 101..110 {
        run.tick(&[primary(lsn, 1), replica(lsn - 1, Some(0), 1)]);
        assert!(!handle.publish_nodes(run.view.clone()));
    }
    assert_eq!(handle.load().generation, generation);
    assert_eq!(handle.load().nodes[0].wal_lsn, Some(109), "positions are still published");
    // Two exclusion reasons for the same stale replica: no new generation either.
    run.tick(&[primary(5000, 1), replica(100, None, 1)]);
    assert!(handle.publish_nodes(run.view.clone()));
    run.tick(&[primary(5000, 1), replica(100, Some(0), 1)]);
    assert_eq!(run.view[1].excluded, Some(X::LagBytes));
    assert!(!handle.publish_nodes(run.view.clone()));
}

#[test]
fn the_generation_read_alone_is_the_snapshots_and_the_watchs() {
    let mut run = Run::new(2);
    let handle = TopologyHandle::new(Topology { generation: 7, nodes: run.view.clone() });
    let watch = handle.subscribe();
    assert_eq!(handle.generation(), 7);
    for (i, ticks) in [
        [primary(100, 1), replica(100, Some(0), 1)],
        [primary(200, 1), replica(199, Some(0), 1)],
        [primary(300, 1), replica(100, None, 1)],
        [primary(300, 1), replica(300, Some(0), 1)],
    ]
    .iter()
    .enumerate()
    {
        run.tick(ticks);
        handle.publish_nodes(run.view.clone());
        assert_eq!(handle.generation(), handle.load().generation, "after tick {i}");
        assert_eq!(handle.generation(), *watch.borrow(), "after tick {i}");
    }
    assert!(handle.generation() > 7, "roles and eligibility changed on the way");
}

#[test]
fn sender_hosts_match_configured_hosts() {
    let table = [
        ("127.0.0.1", "127.0.0.1", true),
        ("/var/run/postgresql", "127.0.0.1", true),
        ("localhost", "127.0.0.1", true),
        ("db1.example", "DB1.example", true),
        ("/var/run/postgresql", "db1.example", false),
        ("10.0.0.1", "10.0.0.2", false),
    ];
    for (sender, configured, same) in table {
        assert_eq!(same_host(sender, configured), same, "{sender} vs {configured}");
    }
}
