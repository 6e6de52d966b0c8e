//! A transaction whose server connection died: the session answers for it, as PostgreSQL answers
//! a transaction block after an error, without a server.
//!
//! The client was told its statement failed (ReadyForQuery `E`). Until it ends the block, every
//! statement gets `25P02` and only a transaction end (`ROLLBACK`, `COMMIT`, ... which then report
//! `ROLLBACK`) brings the session back to idle; in the extended protocol an error skips to the
//! next Sync. So a client that goes on after the error never has the rest of its "transaction"
//! run in autocommit on another connection. A loss the client has not heard of yet (noticed
//! while it was idle) is told at its next statement, even a `COMMIT`: answered only with the
//! `ROLLBACK` tag, as PostgreSQL answers a failed block's COMMIT, it would pass for a commit
//! (drivers do not read the tag), and the transaction would be lost unseen.

use bytes::{BufMut, BytesMut};

use super::super::unit::{tx_end_outside_block, Unit};
use crate::protocol::messages::{self, Severity};
use crate::protocol::{tag, Msg, TxStatus};

/// SQLSTATE `in_failed_sql_transaction`.
const IN_FAILED_SQL_TRANSACTION: &str = "25P02";

/// The state of a transaction that died with its server connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Aborted {
    /// The loss was noticed while the client was idle: its next statement hears this error
    /// (SQLSTATE, message) first, then `25P02` as usual.
    pub(super) cause: Option<(String, String)>,
    /// An error was sent in an extended block: messages are skipped up to the Sync.
    skipping: bool,
    /// The last Parse (of the unnamed statement) was a transaction end: its command tag.
    parsed_end: Option<&'static str>,
}

impl Aborted {
    /// Lost under a unit: the client was told. If it had not sent the unit's Sync yet, what it
    /// sends up to the Sync is discarded and the Sync answered `E`.
    pub(super) fn lost(synced: bool) -> Self {
        Self { skipping: !synced, ..Self::default() }
    }

    /// The loss was noticed while the client waited: its next statement gets `code`/`message`.
    pub(super) fn noticed_idle(code: &str, message: String) -> Self {
        Self { cause: Some((code.to_string(), message)), ..Self::default() }
    }
}

/// What answering one unit left behind.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum AbortedStep {
    /// Still in the failed block.
    Still(Aborted),
    /// The block ended: the session is idle again.
    Ended,
}

fn failed(s: &mut Aborted, out: &mut BytesMut) {
    if let Some((code, msg)) = s.cause.take() {
        messages::error_response(out, Severity::Error, &code, &msg);
        return;
    }
    let msg = "current transaction is aborted (its server connection was lost), commands ignored until end of transaction block";
    messages::error_response(out, Severity::Error, IN_FAILED_SQL_TRANSACTION, msg);
}

/// Answer `unit` for a failed transaction block; the replies go to `out`.
pub(super) fn answer(mut state: Aborted, unit: &Unit, out: &mut BytesMut) -> AbortedStep {
    match unit {
        Unit::Simple(frame) => {
            let ends = if frame.tag() == tag::QUERY {
                messages::decode_query(frame.body()).and_then(tx_end_outside_block)
            } else {
                None
            };
            if let Some(command) = ends {
                end_block(&mut state, command, out);
                messages::ready_for_query(out, TxStatus::Idle);
                return AbortedStep::Ended;
            }
            failed(&mut state, out);
            messages::ready_for_query(out, TxStatus::Failed);
            AbortedStep::Still(state)
        }
        Unit::Extended(frames) => frames.iter().fold(AbortedStep::Still(state), |step, f| match step {
            AbortedStep::Still(s) => extended(s, f, out),
            // After the Execute that ended the block, the rest runs as usual next time; here
            // only its Sync can follow (anything else is answered as a fresh failure).
            AbortedStep::Ended => {
                if f.tag() == tag::SYNC {
                    messages::ready_for_query(out, TxStatus::Idle);
                }
                AbortedStep::Ended
            }
        }),
    }
}

fn extended(mut s: Aborted, f: Msg<'_>, out: &mut BytesMut) -> AbortedStep {
    let t = f.tag();
    if t == tag::SYNC {
        messages::ready_for_query(out, TxStatus::Failed);
        return AbortedStep::Still(Aborted { cause: s.cause, ..Aborted::default() });
    }
    if s.skipping || t == tag::FLUSH {
        return AbortedStep::Still(s);
    }
    let ok = match t {
        tag::PARSE => {
            s.parsed_end = messages::decode_parse(f.body())
                .filter(|p| p.name.is_empty())
                .and_then(|p| std::str::from_utf8(p.query).ok().and_then(tx_end_outside_block));
            s.parsed_end.map(|_| messages::parse_complete(out)).is_some()
        }
        tag::BIND => s.parsed_end.map(|_| put_empty(out, tag::BIND_COMPLETE)).is_some(),
        tag::DESCRIBE => s.parsed_end.map(|_| describe_nothing(f, out)).is_some(),
        tag::CLOSE => {
            messages::close_complete(out);
            true
        }
        tag::EXECUTE if s.parsed_end.is_some() => {
            let command = s.parsed_end.unwrap_or("ROLLBACK");
            end_block(&mut s, command, out);
            return AbortedStep::Ended;
        }
        _ => false,
    };
    if !ok {
        failed(&mut s, out);
        s.skipping = true;
    }
    AbortedStep::Still(s)
}

/// The reply to the statement that ends the failed block (`command`: its tag, "COMMIT" or
/// "ROLLBACK"): the `ROLLBACK` tag, as PostgreSQL answers; but a COMMIT whose client has not
/// heard of the loss yet gets that error instead (the block ends either way).
fn end_block(s: &mut Aborted, command: &str, out: &mut BytesMut) {
    match s.cause.take() {
        Some((code, msg)) if command == "COMMIT" => messages::error_response(out, Severity::Error, &code, &msg),
        _ => messages::command_complete(out, "ROLLBACK"),
    }
}

fn put_empty(out: &mut BytesMut, t: u8) {
    out.put_u8(t);
    out.put_i32(4);
}

/// Describe of a transaction end: no parameters (statement) and no rows.
fn describe_nothing(f: Msg<'_>, out: &mut BytesMut) {
    if f.body().first() == Some(&b'S') {
        out.put_u8(tag::PARAMETER_DESCRIPTION);
        out.put_i32(6);
        out.put_i16(0);
    }
    put_empty(out, tag::NO_DATA);
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::protocol::Frame;

    fn frame(build: impl FnOnce(&mut BytesMut)) -> Frame {
        let mut b = BytesMut::new();
        build(&mut b);
        Frame::from_bytes(b.freeze())
    }

    fn tags(out: &BytesMut) -> String {
        let mut rest = &out[..];
        let mut s = String::new();
        while rest.len() >= 5 {
            let len = i32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            s.push(rest[0] as char);
            if rest[0] == tag::READY_FOR_QUERY {
                s.push(rest[5] as char);
            }
            rest = &rest[1 + len..];
        }
        s
    }

    #[test]
    fn simple_statements_fail_until_the_block_ends() {
        let mut out = BytesMut::new();
        let select = Unit::Simple(frame(|b| messages::query(b, "SELECT 1")));
        assert_eq!(answer(Aborted::default(), &select, &mut out), AbortedStep::Still(Aborted::default()));
        assert_eq!(tags(&out), "EZE");
        let mut out = BytesMut::new();
        let commit = Unit::Simple(frame(|b| messages::query(b, "COMMIT")));
        assert_eq!(answer(Aborted::default(), &commit, &mut out), AbortedStep::Ended);
        assert_eq!(tags(&out), "CZI");
    }

    #[test]
    fn extended_errors_skip_to_sync_and_a_rollback_ends_the_block() {
        let mut out = BytesMut::new();
        let insert = Unit::extended(vec![
            frame(|b| messages::parse(b, "", b"INSERT INTO t VALUES (1)", &[0, 0])),
            frame(|b| messages::bind_text(b, &[])),
            frame(|b| messages::execute(b, "", 0)),
            frame(messages::sync),
        ]);
        assert!(matches!(answer(Aborted::default(), &insert, &mut out), AbortedStep::Still(_)));
        assert_eq!(tags(&out), "EZE");
        let mut out = BytesMut::new();
        let rollback = Unit::extended(vec![
            frame(|b| messages::parse(b, "", b"ROLLBACK", &[0, 0])),
            frame(|b| messages::bind_text(b, &[])),
            frame(|b| messages::describe(b, b'P', "")),
            frame(|b| messages::execute(b, "", 0)),
            frame(messages::sync),
        ]);
        assert_eq!(answer(Aborted::default(), &rollback, &mut out), AbortedStep::Ended);
        assert_eq!(tags(&out), "12nCZI");
    }

    #[test]
    fn a_commit_hears_of_a_loss_noticed_while_idle_and_ends_the_block() {
        let noticed = || Aborted::noticed_idle("57P01", "lost".into());
        let simple = |sql: &str| Unit::Simple(frame(|b| messages::query(b, sql)));
        let extended = |sql: &'static str| {
            Unit::extended(vec![
                frame(|b| messages::parse(b, "", sql.as_bytes(), &[0, 0])),
                frame(|b| messages::bind_text(b, &[])),
                frame(|b| messages::describe(b, b'P', "")),
                frame(|b| messages::execute(b, "", 0)),
                frame(messages::sync),
            ])
        };
        // (unit, replies): the error, never a COMMIT that passes for one; a ROLLBACK did what
        // it was asked.
        let cases = [
            ("simple COMMIT", simple("COMMIT"), "EZI"),
            ("simple END", simple("end work;"), "EZI"),
            ("simple ROLLBACK", simple("ROLLBACK"), "CZI"),
            ("extended COMMIT", extended("COMMIT"), "12nEZI"),
            ("extended ROLLBACK", extended("ROLLBACK"), "12nCZI"),
        ];
        for (name, unit, want) in cases {
            let mut out = BytesMut::new();
            assert_eq!(answer(noticed(), &unit, &mut out), AbortedStep::Ended, "{name}");
            assert_eq!(tags(&out), want, "{name}");
        }
        // Once told (by its first statement), a COMMIT gets PostgreSQL's answer: ROLLBACK.
        let mut out = BytesMut::new();
        let AbortedStep::Still(told) = answer(noticed(), &simple("SELECT 1"), &mut out) else { panic!("ended") };
        assert_eq!(tags(&out), "EZE");
        let mut out = BytesMut::new();
        assert_eq!(answer(told, &simple("COMMIT"), &mut out), AbortedStep::Ended);
        assert_eq!(tags(&out), "CZI");
    }
}
