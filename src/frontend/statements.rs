//! Prepared statements across pooled server connections.
//!
//! The session keeps the client's statement names -> (query, parameter types, class). A server
//! connection keeps which statements it has (a bounded LRU keyed by full text and types, see
//! `backend::prepared`), under `sluice_<n>` names shared by every client that prepares the same
//! text there. Translating a batch rewrites names, prepares lazily what the connection lacks,
//! closes what the LRU evicts (replies swallowed), and answers Parse/Close of statements the
//! connection already has itself, in protocol order. A client's `DEALLOCATE name` of a
//! protocol-level statement is rewritten to the server-side name.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytes::BytesMut;

use super::expect::{Expect, Replies, ReplyKind, Synth};
use super::unit::may_start_with;
use crate::backend::prepared::{StmtKey, StmtName};
use crate::backend::ServerConn;
use crate::keyed_hash::KeyedState;
use crate::protocol::{messages, tag, Frame, Frames, Kinds, Msg};
use crate::router::{Class, Classifier};

/// A statement the client prepared.
#[derive(Debug)]
pub struct StmtDef {
    /// Query text and parameter types: the identity on server connections.
    pub key: Arc<StmtKey>,
    /// How it was classified.
    pub class: Arc<Class>,
    /// The classifier's epoch before `class` was got: while it holds, `class` is what
    /// classifying the text again would give ([`Classifier::epoch`]).
    epoch: u64,
}

impl StmtDef {
    pub(super) fn new(query: &[u8], param_types: &[u8], classifier: &Classifier) -> Self {
        let epoch = classifier.epoch();
        Self {
            key: Arc::new(StmtKey { query: query.to_vec(), param_types: param_types.to_vec() }),
            class: classifier.classify(&String::from_utf8_lossy(query)),
            epoch,
        }
    }

    /// True if a Parse of `query` with `param_types` defines this very statement again, and
    /// its class still stands: classifying it again would give the same.
    fn is_again(&self, query: &[u8], param_types: &[u8], classifier: &Classifier) -> bool {
        self.key.query == query && self.key.param_types == param_types && self.epoch == classifier.epoch()
    }
}

/// Hash of a statement's identity.
#[must_use]
pub fn statement_hash(query: &[u8], param_types: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    query.hash(&mut h);
    param_types.hash(&mut h);
    h.finish()
}

/// True if a batch may have the only shape [`Statements::answer_locally`] may answer: Parse
/// and Close messages, then Sync. Looks at the kinds of message the batch holds only (not at
/// their order: a Sync before the last message passes here, and `answer_locally` declines it).
#[must_use]
pub fn may_answer_locally(frames: &Frames) -> bool {
    frames.last_tag() == Some(tag::SYNC)
        && frames.kinds().within(Kinds::PARSE | Kinds::NAMED_PARSE | Kinds::CLOSE | Kinds::SYNC)
}

/// The client's prepared statements (named, plus the last unnamed one).
#[derive(Default)]
pub struct Statements {
    /// Hashed with [`KeyedState`]: every Bind of a named statement looks it up here.
    named: HashMap<String, Arc<StmtDef>, KeyedState>,
    unnamed: Option<Arc<StmtDef>>,
}

/// A unit being translated for one server connection: the bytes to send, the replies they will
/// produce, and which statements it assumes the connection now has.
pub struct Batch<'a> {
    /// The connection the unit runs on.
    pub conn: &'a mut ServerConn,
    /// Classifies statements the client parses.
    pub classifier: &'a Classifier,
    /// Messages to send.
    pub out: BytesMut,
    /// Expected replies, in order.
    pub queue: Replies,
    /// Statements newly assumed present on the connection (forgotten if the unit fails).
    pub added: Vec<Arc<StmtKey>>,
    /// Server-side statements this unit closes (closed again if it fails).
    pub closed: Vec<String>,
}

impl<'a> Batch<'a> {
    /// An empty batch for `conn`, to be begun ([`Batch::begin`]) before the unit is translated
    /// into it.
    ///
    /// Two steps, so that the batch is made in the caller's place: built here with its first
    /// messages and returned (168 bytes), it was copied out with a `memcpy` call, once per unit.
    pub fn new(conn: &'a mut ServerConn, classifier: &'a Classifier) -> Self {
        Self { out: conn.take_out(), conn, classifier, queue: Replies::new(), added: Vec::new(), closed: Vec::new() }
    }

    /// What goes before a new unit: the state sync decided at checkout (its replies
    /// swallowed), then the closes of statements a failed unit may have left.
    pub fn begin(&mut self) {
        if let Some(sql) = self.conn.take_pending_sync() {
            messages::query(&mut self.out, &sql);
            self.queue.push_back(Expect::Server { kind: ReplyKind::StateSync, forward: false });
        }
        for name in self.conn.statements_mut().begin_unit() {
            self.close_server(name);
        }
    }

    /// An empty batch that continues the unit already running on `conn` (its messages stream
    /// in while it runs): nothing is closed first.
    pub fn continuing(conn: &'a mut ServerConn, classifier: &'a Classifier) -> Self {
        Self { conn, classifier, out: BytesMut::new(), queue: Replies::new(), added: Vec::new(), closed: Vec::new() }
    }

    /// Close a server-side statement; the reply is swallowed.
    fn close_server(&mut self, name: String) {
        messages::close(&mut self.out, b'S', &name);
        self.queue.push_back(Expect::Server { kind: ReplyKind::Close, forward: false });
        self.closed.push(name);
    }

    /// Send the client's message as it is; its replies go to the client.
    pub fn forward(&mut self, frame: Msg<'_>, kind: Option<ReplyKind>) {
        self.out.extend_from_slice(frame.bytes());
        self.queue.extend(kind.map(|kind| Expect::Server { kind, forward: true }));
    }

    /// Answer the client ourselves, in protocol order.
    fn synth(&mut self, s: Synth) {
        self.queue.push_back(Expect::Synth(s));
    }

    /// The statement's name on the connection, preparing it (replies swallowed) if it lacks it.
    fn ensure(&mut self, def: &StmtDef) -> StmtName {
        match self.conn.statements_mut().get(&def.key) {
            Some(name) => name,
            None => self.prepare(def, false),
        }
    }

    /// Re-create the unnamed statement if the connection's unnamed slot holds something else.
    fn ensure_unnamed(&mut self, def: &StmtDef) {
        // The same Arc first (the statement a driver parses again with every execution): no
        // comparison of the text.
        let has = self.conn.unnamed().is_some_and(|k| Arc::ptr_eq(k, &def.key) || **k == *def.key);
        if !has {
            messages::parse(&mut self.out, "", &def.key.query, &def.key.param_types);
            self.queue.push_back(Expect::Server { kind: ReplyKind::Parse, forward: false });
            self.conn.set_unnamed(Some(Arc::clone(&def.key)));
        }
    }

    /// Prepare under a new name (never used before on this connection, so no stale statement
    /// can be in the way), closing what the bound evicts.
    fn prepare(&mut self, def: &StmtDef, forward: bool) -> StmtName {
        let (name, evicted) = self.conn.statements_mut().insert(Arc::clone(&def.key));
        for old in evicted {
            self.close_server(old);
        }
        messages::parse(&mut self.out, &name, &def.key.query, &def.key.param_types);
        self.queue.push_back(Expect::Server { kind: ReplyKind::Parse, forward });
        self.added.push(Arc::clone(&def.key));
        name
    }
}

impl Statements {
    /// The statement a Parse of `query` with `param_types` under `name` defines again (the same
    /// text and types, and a class that still stands): drivers re-parse their unnamed statement
    /// with every execution. Reusing it spares classifying the text and copying it.
    #[must_use]
    pub fn reparsed(
        &self,
        name: &str,
        query: &[u8],
        param_types: &[u8],
        classifier: &Classifier,
    ) -> Option<&Arc<StmtDef>> {
        self.get(name).filter(|def| def.is_again(query, param_types, classifier))
    }

    /// Look up a client statement by name ("" is the unnamed one).
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Arc<StmtDef>> {
        if name.is_empty() {
            self.unnamed.as_ref()
        } else {
            self.named.get(name)
        }
    }

    /// Answer a batch without a server connection if every message allows it: Parse of a
    /// statement a server already accepted for this kind of session (`accepted(hash)`), Close of
    /// a statement, and a final Sync (outside a transaction). Clients that prepare synchronously
    /// while another of their sessions holds the last pooled connection (pgbench `-M prepared`
    /// runs all its clients on one thread) would otherwise wait for each other.
    pub fn answer_locally(
        &mut self,
        frames: &Frames,
        accepted: impl Fn(u64) -> bool,
        classifier: &Classifier,
    ) -> Option<BytesMut> {
        let rest = || frames.iter().take(frames.len().saturating_sub(1));
        let local = |f: Msg<'_>| match f.tag() {
            tag::PARSE => messages::decode_parse(f.body())
                .is_some_and(|p| !p.name.is_empty() && accepted(statement_hash(p.query, p.param_types))),
            tag::CLOSE => matches!(messages::decode_target(f.body()), Some((b'S', name)) if !name.is_empty()),
            _ => false,
        };
        if frames.last_tag() != Some(tag::SYNC) || !rest().all(local) {
            return None;
        }
        let mut out = BytesMut::new();
        for f in rest() {
            if let Some(p) = messages::decode_parse(f.body()).filter(|_| f.tag() == tag::PARSE) {
                self.define(p.name, Arc::new(StmtDef::new(p.query, p.param_types, classifier)));
                messages::parse_complete(&mut out);
            } else if let Some((_, name)) = messages::decode_target(f.body()) {
                self.named.remove(name);
                messages::close_complete(&mut out);
            }
        }
        messages::ready_for_query(&mut out, crate::protocol::TxStatus::Idle);
        Some(out)
    }

    /// Record a Parse's definition.
    pub fn define(&mut self, name: &str, def: Arc<StmtDef>) {
        if name.is_empty() {
            self.unnamed = Some(def);
        } else {
            self.named.insert(name.to_string(), def);
        }
    }

    /// Forget everything (after DISCARD ALL / DEALLOCATE ALL).
    pub fn clear(&mut self) {
        self.named.clear();
        self.unnamed = None;
    }

    /// Translate one client message of an extended batch. `found`: the definition classifying
    /// the unit found for it (`unit::Resolved`), if any: the one a Parse records, the statement
    /// a Bind runs.
    pub fn translate(&mut self, frame: Msg<'_>, found: Option<&Arc<StmtDef>>, batch: &mut Batch<'_>) {
        match frame.tag() {
            tag::PARSE => self.parse(frame, found, batch),
            tag::BIND => self.bind(frame, found, batch),
            tag::DESCRIBE => self.describe(frame, batch),
            tag::CLOSE => match messages::decode_target(frame.body()) {
                Some((b'S', name)) if !name.is_empty() => {
                    // Keep the server-side statement cached for other clients; answer ourselves.
                    self.named.remove(name);
                    batch.synth(Synth::CloseComplete);
                }
                _ => batch.forward(frame, Some(ReplyKind::Close)),
            },
            tag::EXECUTE => batch.forward(frame, Some(ReplyKind::Execute)),
            tag::SYNC => batch.forward(frame, Some(ReplyKind::Sync)),
            _ => batch.forward(frame, None),
        }
    }

    fn bind(&self, frame: Msg<'_>, found: Option<&Arc<StmtDef>>, batch: &mut Batch<'_>) {
        let head = messages::decode_bind_head(frame.body());
        match head.and_then(|h| found.or_else(|| self.get(h.statement)).map(|d| (h, d))) {
            Some((h, def)) if !h.statement.is_empty() => {
                let name = batch.ensure(def);
                messages::bind_renamed(&mut batch.out, h.portal, &name, h.rest);
                batch.queue.push_back(Expect::Server { kind: ReplyKind::Bind, forward: true });
            }
            Some((_, def)) => {
                batch.ensure_unnamed(def);
                batch.forward(frame, Some(ReplyKind::Bind));
            }
            None => batch.forward(frame, Some(ReplyKind::Bind)),
        }
    }

    fn describe(&self, frame: Msg<'_>, batch: &mut Batch<'_>) {
        match messages::decode_target(frame.body()) {
            Some((b'S', name)) if !name.is_empty() && self.named.contains_key(name) => {
                let name = batch.ensure(&self.named[name]);
                messages::describe(&mut batch.out, b'S', &name);
                batch.queue.push_back(Expect::Server { kind: ReplyKind::Describe, forward: true });
            }
            Some((b'S', "")) => {
                if let Some(def) = &self.unnamed {
                    batch.ensure_unnamed(def);
                }
                batch.forward(frame, Some(ReplyKind::Describe));
            }
            _ => batch.forward(frame, Some(ReplyKind::Describe)),
        }
    }

    fn parse(&mut self, frame: Msg<'_>, found: Option<&Arc<StmtDef>>, batch: &mut Batch<'_>) {
        // What the Parse defines: found when the unit was classified (its text and types are
        // the message's), or decoded here.
        let found = found.and_then(|def| Some((messages::decode_parse_name(frame.body())?, Arc::clone(def))));
        let (name, mut def) = match found {
            Some(known) => known,
            None => {
                let Some(p) = messages::decode_parse(frame.body()) else {
                    // Let the server produce the error for a malformed Parse.
                    return batch.forward(frame, Some(ReplyKind::Parse));
                };
                let def = match self.reparsed(p.name, p.query, p.param_types, batch.classifier) {
                    Some(def) => Arc::clone(def),
                    None => Arc::new(StmtDef::new(p.query, p.param_types, batch.classifier)),
                };
                (p.name, def)
            }
        };
        let name = name.to_string();
        if name.is_empty() {
            if let Some(server) = self.deallocate(&def.key.query, batch) {
                // `DEALLOCATE <client name>` runs as `DEALLOCATE <server name>`: that is what the
                // client's unnamed statement now is, here and wherever a later Bind re-creates
                // it (with the client's text, the Bind would re-parse and fail with 26000).
                let mapped = format!("DEALLOCATE {server}");
                let types = &def.key.param_types;
                messages::parse(&mut batch.out, "", mapped.as_bytes(), types);
                def = Arc::new(StmtDef::new(mapped.as_bytes(), types, batch.classifier));
                batch.queue.push_back(Expect::Server { kind: ReplyKind::Parse, forward: true });
                batch.conn.set_unnamed(Some(Arc::clone(&def.key)));
            } else {
                batch.conn.set_unnamed(Some(Arc::clone(&def.key)));
                batch.forward(frame, Some(ReplyKind::Parse));
            }
        } else if batch.conn.statements_mut().get(&def.key).is_some() {
            batch.synth(Synth::ParseComplete);
        } else {
            batch.prepare(&def, true);
        }
        self.define(&name, def);
    }

    /// Translate a simple Query: forwarded as it is, except `DEALLOCATE <client name>` of a
    /// protocol-level statement, which runs as `DEALLOCATE <server name>`.
    pub fn translate_query(&mut self, frame: &Frame, batch: &mut Batch<'_>) {
        // The first letter before the text is validated and split (every Query comes here).
        let sql = Some(frame.body()).filter(|b| may_start_with(b, b"D")).and_then(messages::decode_query);
        match sql.and_then(|sql| self.deallocate(sql.as_bytes(), batch)) {
            Some(server) => {
                messages::query(&mut batch.out, &format!("DEALLOCATE {server}"));
                batch.queue.push_back(Expect::Server { kind: ReplyKind::Query, forward: true });
            }
            None => batch.forward(frame.msg(), Some(ReplyKind::Query)),
        }
        batch.conn.set_unnamed(None);
    }

    /// If `sql` is `DEALLOCATE [PREPARE] name` of one of the client's protocol-level statements:
    /// forget it, make sure the connection has it, take it out of the connection's books, and
    /// return its server-side name (the caller sends the DEALLOCATE).
    fn deallocate(&mut self, sql: &[u8], batch: &mut Batch<'_>) -> Option<String> {
        // The first letter before the text is validated and split: every unnamed Parse asks.
        if !may_start_with(sql, b"D") {
            return None;
        }
        let target = deallocate_target(std::str::from_utf8(sql).ok()?)?;
        let def = self.named.remove(&target)?;
        let server = batch.ensure(&def);
        batch.conn.statements_mut().remove(&def.key);
        // Should the unit fail before the DEALLOCATE ran, the name is closed next time.
        batch.closed.push(server.to_string());
        Some(server.to_string())
    }
}

/// The statement name of `DEALLOCATE [PREPARE] name` (folded as PostgreSQL folds it), or `None`
/// for anything else (including `DEALLOCATE ALL`).
fn deallocate_target(sql: &str) -> Option<String> {
    let sql = sql.trim().trim_end_matches(';').trim_end();
    let mut words = sql.split_ascii_whitespace();
    if !words.next()?.eq_ignore_ascii_case("deallocate") {
        return None;
    }
    let mut name = words.next()?;
    if name.eq_ignore_ascii_case("prepare") {
        name = words.next()?;
    }
    if words.next().is_some() || name.eq_ignore_ascii_case("all") {
        return None;
    }
    match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
        Some(quoted) if !quoted.contains('"') => Some(quoted.to_string()),
        Some(_) => None,
        None => Some(name.to_ascii_lowercase()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deallocate_targets() {
        assert_eq!(deallocate_target("DEALLOCATE _pg3_0").as_deref(), Some("_pg3_0"));
        assert_eq!(deallocate_target("deallocate prepare S_1;").as_deref(), Some("s_1"));
        assert_eq!(deallocate_target(" DEALLOCATE \"Mixed\" ").as_deref(), Some("Mixed"));
        assert_eq!(deallocate_target("DEALLOCATE ALL"), None);
        assert_eq!(deallocate_target("DEALLOCATE PREPARE ALL"), None);
        assert_eq!(deallocate_target("DEALLOCATE a; SELECT 1"), None);
        assert_eq!(deallocate_target("SELECT 1"), None);
    }

    fn frame(build: impl FnOnce(&mut BytesMut)) -> Frame {
        let mut b = BytesMut::new();
        build(&mut b);
        Frame::from_bytes(b.freeze())
    }

    #[test]
    fn a_statement_parsed_again_is_reused_while_its_class_stands() {
        let classifier = Classifier::new(16, Vec::new());
        let mut s = Statements::default();
        let sql = b"SELECT * FROM v WHERE id = $1";
        s.define("", Arc::new(StmtDef::new(sql, &[0, 0], &classifier)));
        let first = Arc::clone(s.get("").unwrap());
        let again = s.reparsed("", sql, &[0, 0], &classifier).expect("the same text and types");
        assert!(Arc::ptr_eq(again, &first));
        assert!(s.reparsed("", b"SELECT * FROM w WHERE id = $1", &[0, 0], &classifier).is_none());
        assert!(s.reparsed("", sql, &[0, 1, 0, 0, 0, 23], &classifier).is_none());
        assert!(s.reparsed("other", sql, &[0, 0], &classifier).is_none());
        // Another session learnt the text writes: the next Parse classifies it again.
        classifier.note_write("SELECT * FROM v WHERE id = $1");
        assert!(s.reparsed("", sql, &[0, 0], &classifier).is_none());
        let def = StmtDef::new(sql, &[0, 0], &classifier);
        assert_eq!(def.class.reason, crate::router::Reason::NotedWrite);
        s.define("", Arc::new(def));
        // And a catalog change.
        assert!(s.reparsed("", sql, &[0, 0], &classifier).is_some());
        classifier.set_catalog(crate::router::FunctionCatalog::default());
        assert!(s.reparsed("", sql, &[0, 0], &classifier).is_none());
    }

    #[test]
    fn accepted_prepares_and_closes_are_answered_locally_in_order() {
        let classifier = Classifier::new(16, Vec::new());
        let known = statement_hash(b"SELECT 1", &[0, 0]);
        let mut s = Statements::default();
        let batch: Frames = [
            frame(|b| messages::parse(b, "P_0", b"SELECT 1", &[0, 0])),
            frame(|b| messages::close(b, b'S', "old")),
            frame(messages::sync),
        ]
        .into_iter()
        .collect();
        let reply = s.answer_locally(&batch, |h| h == known, &classifier).expect("answered locally");
        assert_eq!(&reply[..], b"1\0\0\0\x043\0\0\0\x04Z\0\0\0\x05I");
        assert_eq!(s.get("P_0").map(|d| d.key.query.as_slice()), Some(&b"SELECT 1"[..]));
        // Unknown text, an unnamed statement, or anything that runs needs a server.
        let unknown: Frames =
            [frame(|b| messages::parse(b, "P_1", b"SELECT 2", &[0, 0])), frame(messages::sync)].into_iter().collect();
        assert!(s.answer_locally(&unknown, |h| h == known, &classifier).is_none());
        let unnamed: Frames =
            [frame(|b| messages::parse(b, "", b"SELECT 1", &[0, 0])), frame(messages::sync)].into_iter().collect();
        assert!(s.answer_locally(&unnamed, |h| h == known, &classifier).is_none());
        let no_sync: Frames = [frame(|b| messages::parse(b, "P_2", b"SELECT 1", &[0, 0]))].into_iter().collect();
        assert!(s.answer_locally(&no_sync, |h| h == known, &classifier).is_none());
    }
}
