//! Table-driven tests of [`route`]: stuck sessions, hints, user defaults, session state,
//! `primary_reads` policies, weights, and topologies without a primary or replicas.

use super::*;
use crate::topology::{NodeView, Role, Topology};

use Role::{Down, Primary as P, Replica as Rp};

fn topology(nodes: &[(Role, u32)]) -> Topology {
    Topology {
        generation: 1,
        nodes: nodes
            .iter()
            .enumerate()
            .map(|(index, &(role, weight))| NodeView {
                index,
                name: format!("n{index}"),
                host: "127.0.0.1".into(),
                port: 5432,
                role,
                weight,
                wal_lsn: None,
                excluded: None,
                timeline: None,
                replay_lag: None,
            })
            .collect(),
    }
}

fn session(stuck_to: Option<usize>, state: bool, default_route: DefaultRoute, ticket: u64) -> SessionView {
    SessionView { stuck_to, has_session_state: state, default_route, ticket, min_lsn: None, standby_refused: false }
}

fn class(access: Access, hint: Option<Hint>) -> Class {
    Class { hint, ..Class::new(access, Reason::PureRead) }
}

const AUTO: DefaultRoute = DefaultRoute::Auto;
const FALLBACK: PrimaryReads = PrimaryReads::Fallback;
const NEVER: PrimaryReads = PrimaryReads::Never;
const ALWAYS: PrimaryReads = PrimaryReads::Always;
const R: Access = Access::Read;
const W: Access = Access::Write;
const NL: Access = Access::NodeLocal;
const HP: Option<Hint> = Some(Hint::Primary);
const HR: Option<Hint> = Some(Hint::Replica);

/// (name, nodes, access, hint, session, policy, expected candidates, expected reason)
type Case =
    (&'static str, &'static [(Role, u32)], Access, Option<Hint>, SessionView, PrimaryReads, &'static [usize], Reason);

const PRR: &[(Role, u32)] = &[(P, 1), (Rp, 1), (Rp, 1)];

fn cases() -> Vec<Case> {
    let plain = session(None, false, AUTO, 0);
    let t1 = session(None, false, AUTO, 1);
    let refused = SessionView { standby_refused: true, ..plain };
    vec![
        ("standby refuses: read", PRR, R, None, refused, ALWAYS, &[0], Reason::StandbyRefused),
        ("standby refuses: replica hint", PRR, R, HR, refused, NEVER, &[0], Reason::StandbyRefused),
        ("standby refuses: write", PRR, W, None, refused, FALLBACK, &[0], Reason::Write),
        (
            "standby refuses: stuck",
            PRR,
            R,
            None,
            SessionView { stuck_to: Some(1), ..refused },
            FALLBACK,
            &[1],
            Reason::InTransaction,
        ),
        ("write to primary", PRR, W, None, plain, FALLBACK, &[0], Reason::Write),
        ("node-local read to primary", PRR, NL, None, plain, ALWAYS, &[0], Reason::NodeLocal),
        ("node-local read, no primary", &[(Down, 1), (Rp, 1)], NL, None, plain, FALLBACK, &[], Reason::NoPrimary),
        ("node-local read, replica hint", PRR, NL, HR, plain, NEVER, &[1, 2], Reason::HintReplica),
        ("read ticket 0", PRR, R, None, plain, FALLBACK, &[1, 2, 0], Reason::ReadOnReplica),
        ("read ticket 1", PRR, R, None, t1, FALLBACK, &[2, 1, 0], Reason::ReadOnReplica),
        ("read ticket wraps", PRR, R, None, session(None, false, AUTO, 2), FALLBACK, &[1, 2, 0], Reason::ReadOnReplica),
        ("read never", PRR, R, None, t1, NEVER, &[2, 1], Reason::ReadOnReplica),
        ("read always t0", PRR, R, None, plain, ALWAYS, &[1, 2, 0], Reason::ReadOnReplica),
        ("read always t2", PRR, R, None, session(None, false, AUTO, 2), ALWAYS, &[0, 1, 2], Reason::ReadOnPrimary),
        ("stuck read", PRR, R, None, session(Some(0), false, AUTO, 0), FALLBACK, &[0], Reason::InTransaction),
        (
            "stuck write on replica",
            PRR,
            W,
            HP,
            session(Some(2), true, DefaultRoute::Primary, 0),
            FALLBACK,
            &[2],
            Reason::InTransaction,
        ),
        (
            "stuck on a down node",
            &[(P, 1), (Down, 1)],
            W,
            None,
            session(Some(1), false, AUTO, 0),
            FALLBACK,
            &[1],
            Reason::InTransaction,
        ),
        ("hint primary on read", PRR, R, HP, plain, FALLBACK, &[0], Reason::HintPrimary),
        ("hint replica on write", PRR, W, HR, t1, FALLBACK, &[2, 1, 0], Reason::HintReplica),
        ("hint replica never", PRR, W, HR, plain, NEVER, &[1, 2], Reason::HintReplica),
        ("hint replica, no replica", &[(P, 1)], W, HR, plain, FALLBACK, &[0], Reason::ReadFallbackPrimary),
        ("session state read", PRR, R, None, session(None, true, AUTO, 0), FALLBACK, &[0], Reason::SessionState),
        (
            "session state beats hint replica",
            PRR,
            R,
            HR,
            session(None, true, AUTO, 0),
            FALLBACK,
            &[0],
            Reason::SessionState,
        ),
        (
            "user primary read",
            PRR,
            R,
            None,
            session(None, false, DefaultRoute::Primary, 0),
            FALLBACK,
            &[0],
            Reason::UserDefault,
        ),
        (
            "user primary beats hint replica",
            PRR,
            R,
            HR,
            session(None, false, DefaultRoute::Primary, 0),
            FALLBACK,
            &[0],
            Reason::UserDefault,
        ),
        (
            "user replica read",
            PRR,
            R,
            None,
            session(None, false, DefaultRoute::Replica, 1),
            FALLBACK,
            &[2, 1],
            Reason::UserDefaultReplica,
        ),
        (
            "user replica write",
            PRR,
            W,
            None,
            session(None, false, DefaultRoute::Replica, 0),
            ALWAYS,
            &[1, 2],
            Reason::UserDefaultReplica,
        ),
        (
            "user replica no fallback",
            &[(P, 1), (Down, 1)],
            R,
            HP,
            session(None, true, DefaultRoute::Replica, 0),
            FALLBACK,
            &[],
            Reason::NoReplica,
        ),
        ("no primary: write", &[(Rp, 1), (Down, 1)], W, None, plain, FALLBACK, &[], Reason::NoPrimary),
        ("no primary: hint primary", &[(Rp, 1)], R, HP, plain, FALLBACK, &[], Reason::NoPrimary),
        ("no primary: read", &[(Down, 1), (Rp, 1)], R, None, plain, FALLBACK, &[1], Reason::ReadOnReplica),
        ("split brain: no primary", &[(P, 1), (P, 1), (Rp, 1)], W, None, plain, FALLBACK, &[], Reason::NoPrimary),
        ("split brain: read", &[(P, 1), (P, 1), (Rp, 1)], R, None, plain, ALWAYS, &[2], Reason::ReadOnReplica),
        ("no replica: fallback", &[(P, 1), (Down, 1)], R, None, plain, FALLBACK, &[0], Reason::ReadFallbackPrimary),
        ("no replica: always", &[(P, 1), (Down, 1)], R, None, plain, ALWAYS, &[0], Reason::ReadFallbackPrimary),
        ("no replica: never", &[(P, 1), (Down, 1)], R, None, plain, NEVER, &[], Reason::NoReplica),
        ("nothing at all", &[], R, None, plain, FALLBACK, &[], Reason::NoReplica),
        (
            "unknown roles skipped",
            &[(Role::Unknown, 1), (P, 1), (Rp, 1)],
            R,
            None,
            plain,
            FALLBACK,
            &[2, 1],
            Reason::ReadOnReplica,
        ),
        ("weight 2: ticket 0", &[(P, 1), (Rp, 1), (Rp, 2)], R, None, plain, NEVER, &[1, 2], Reason::ReadOnReplica),
        ("weight 2: ticket 1", &[(P, 1), (Rp, 1), (Rp, 2)], R, None, t1, NEVER, &[2, 1], Reason::ReadOnReplica),
        ("weight 0 counts as 1", &[(P, 1), (Rp, 0), (Rp, 0)], R, None, t1, NEVER, &[2, 1], Reason::ReadOnReplica),
    ]
}

#[test]
fn routing_table() {
    let mut failures = Vec::new();
    for (name, nodes, access, hint, session, primary_reads, want, reason) in cases() {
        let got = route(&class(access, hint), &session, &topology(nodes), &Policy { primary_reads });
        if *got.candidates != *want || got.reason != reason {
            failures.push(format!("{name}: got {got:?}, want {want:?} {reason:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Count which node comes first over many tickets.
fn first_choice_shares(nodes: &[(Role, u32)], primary_reads: PrimaryReads) -> Vec<u32> {
    let topo = topology(nodes);
    let mut counts = vec![0u32; nodes.len()];
    for ticket in 0..1200 {
        let s = session(None, false, AUTO, ticket);
        let r = route(&class(R, None), &s, &topo, &Policy { primary_reads });
        counts[r.candidates[0]] += 1;
        // Every eligible node appears exactly once.
        let mut sorted = r.candidates.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), r.candidates.len());
    }
    counts
}

#[test]
fn weights_set_the_share_of_reads() {
    assert_eq!(first_choice_shares(&[(P, 1), (Rp, 1), (Rp, 2)], FALLBACK), vec![0, 400, 800]);
    assert_eq!(first_choice_shares(&[(P, 1), (Rp, 1), (Rp, 1)], ALWAYS), vec![400, 400, 400]);
    assert_eq!(first_choice_shares(&[(P, 2), (Rp, 1)], ALWAYS), vec![800, 400]);
    assert_eq!(first_choice_shares(&[(Rp, 3), (P, 1), (Rp, 1)], NEVER), vec![900, 0, 300]);
}

#[test]
fn classified_statements_route_end_to_end() {
    let topo = topology(PRR);
    let s = session(None, false, AUTO, 0);
    let policy = Policy::default();
    let go = |sql: &str| route(&classify(sql), &s, &topo, &policy);
    assert_eq!(go("SELECT 1").candidates, vec![1, 2, 0]);
    assert_eq!(go("SELECT * FROM t FOR UPDATE").candidates, vec![0]);
    assert_eq!(go("BEGIN READ ONLY").candidates, vec![1, 2, 0]);
    assert_eq!(go("BEGIN").candidates, vec![0]);
    assert_eq!(
        (go("SELECT gid FROM pg_prepared_xacts").candidates.to_vec(), go("SHOW transaction_read_only").reason),
        (vec![0], Reason::NodeLocal)
    );
    assert_eq!(go("/* sluice: primary */ SELECT 1").reason, Reason::HintPrimary);
    assert_eq!(go("/* sluice: replica */ SELECT nextval('s')").reason, Reason::HintReplica);
}

#[test]
fn reads_after_a_write_use_only_replicas_that_replayed_it() {
    let mut t = topology(&[(P, 1), (Rp, 1), (Rp, 1)]);
    t.nodes[1].wal_lsn = Some(100);
    t.nodes[2].wal_lsn = Some(300);
    let read = class(R, None);
    let policy = Policy { primary_reads: FALLBACK };
    let mut s = session(None, false, AUTO, 0);
    s.min_lsn = Some(200);
    let r = route(&read, &s, &t, &policy);
    assert_eq!(r.candidates, vec![2, 0]);
    s.min_lsn = Some(400);
    let r = route(&read, &s, &t, &policy);
    assert_eq!((r.candidates.to_vec(), r.reason), (vec![0], Reason::ReadYourWrites));
    // Even a policy that keeps reads off the primary yields to read-your-writes.
    let r = route(&read, &s, &t, &Policy { primary_reads: NEVER });
    assert_eq!(r.candidates, vec![0]);
    s.min_lsn = None;
    assert_eq!(route(&read, &s, &t, &policy).candidates, vec![1, 2, 0]);
}

#[test]
fn candidates_past_the_inline_room_keep_their_order() {
    for n in [0, 1, 4, 5, 9] {
        let mut c = Candidates::default();
        c.extend(0..n);
        assert_eq!(c, (0..n).collect::<Vec<_>>(), "{n} nodes");
        assert_eq!(c.len(), n);
    }
    assert_eq!(Candidates::one(3), vec![3]);
    assert_eq!(format!("{:?}", Candidates::one(3)), "[3]");
}
