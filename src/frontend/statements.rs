//! Prepared statements across pooled server connections.
//!
//! The session keeps the client's statement names -> (query, parameter types, class). A server
//! connection keeps which statements it has, under `sluice_<hash>` names shared by every client
//! that prepares the same text. Translating a batch rewrites names, prepares lazily what the
//! connection lacks (replies swallowed), and answers Parse/Close of statements the connection
//! already has itself, in protocol order.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytes::BytesMut;

use super::expect::{Expect, ReplyKind, Synth};
use crate::backend::ServerConn;
use crate::protocol::{messages, tag, Frame};
use crate::router::{Class, Classifier};

/// A statement the client prepared.
#[derive(Debug)]
pub struct StmtDef {
    /// Hash of (query, parameter types): the identity on server connections.
    pub hash: u64,
    /// Query text.
    pub query: Vec<u8>,
    /// Raw parameter-type section of the Parse.
    pub param_types: Vec<u8>,
    /// How it was classified.
    pub class: Arc<Class>,
}

impl StmtDef {
    /// The name this statement has on server connections.
    #[must_use]
    pub fn server_name(&self) -> String {
        format!("sluice_{:016x}", self.hash)
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

/// The client's prepared statements (named, plus the last unnamed one).
#[derive(Default)]
pub struct Statements {
    named: HashMap<String, Arc<StmtDef>>,
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
    pub queue: VecDeque<Expect>,
    /// Hashes newly assumed present on the connection (forgotten if the unit fails).
    pub added: Vec<u64>,
}

impl<'a> Batch<'a> {
    /// An empty batch for `conn`.
    pub fn new(conn: &'a mut ServerConn, classifier: &'a Classifier) -> Self {
        Self { conn, classifier, out: BytesMut::new(), queue: VecDeque::new(), added: Vec::new() }
    }

    /// Send the client's message as it is; its replies go to the client.
    pub fn forward(&mut self, frame: &Frame, kind: Option<ReplyKind>) {
        self.out.extend_from_slice(frame.bytes());
        self.queue.extend(kind.map(|kind| Expect::Server { kind, forward: true }));
    }

    /// Answer the client ourselves, in protocol order.
    fn synth(&mut self, s: Synth) {
        self.queue.push_back(Expect::Synth(s));
    }

    /// Make sure the connection has the named statement, preparing it (replies swallowed) if not.
    fn ensure(&mut self, def: &StmtDef) {
        if !self.conn.prepared.contains(&def.hash) {
            self.prepare(def, false);
        }
    }

    /// Re-create the unnamed statement if the connection's unnamed slot holds something else.
    fn ensure_unnamed(&mut self, def: &StmtDef) {
        if self.conn.unnamed != Some(def.hash) {
            messages::parse(&mut self.out, "", &def.query, &def.param_types);
            self.queue.push_back(Expect::Server { kind: ReplyKind::Parse, forward: false });
            self.conn.unnamed = Some(def.hash);
        }
    }

    fn prepare(&mut self, def: &StmtDef, forward: bool) {
        let name = def.server_name();
        // A Close first makes the Parse succeed even if an earlier failed unit left the name.
        messages::close(&mut self.out, b'S', &name);
        self.queue.push_back(Expect::Server { kind: ReplyKind::Close, forward: false });
        messages::parse(&mut self.out, &name, &def.query, &def.param_types);
        self.queue.push_back(Expect::Server { kind: ReplyKind::Parse, forward });
        self.conn.prepared.insert(def.hash);
        self.added.push(def.hash);
    }
}

impl Statements {
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
        frames: &[Frame],
        accepted: impl Fn(u64) -> bool,
        classifier: &Classifier,
    ) -> Option<BytesMut> {
        let (last, rest) = frames.split_last()?;
        let local = |f: &Frame| match f.tag() {
            tag::PARSE => messages::decode_parse(f.body())
                .is_some_and(|p| !p.name.is_empty() && accepted(statement_hash(p.query, p.param_types))),
            tag::CLOSE => matches!(messages::decode_target(f.body()), Some((b'S', name)) if !name.is_empty()),
            _ => false,
        };
        if last.tag() != tag::SYNC || !rest.iter().all(local) {
            return None;
        }
        let mut out = BytesMut::new();
        for f in rest {
            if let Some(p) = messages::decode_parse(f.body()).filter(|_| f.tag() == tag::PARSE) {
                let def = Arc::new(StmtDef {
                    hash: statement_hash(p.query, p.param_types),
                    query: p.query.to_vec(),
                    param_types: p.param_types.to_vec(),
                    class: classifier.classify(&String::from_utf8_lossy(p.query)),
                });
                self.define(p.name, def);
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

    /// Translate one client message of an extended batch.
    pub fn translate(&mut self, frame: &Frame, batch: &mut Batch<'_>) {
        match frame.tag() {
            tag::PARSE => self.parse(frame, batch),
            tag::BIND => self.bind(frame, batch),
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

    fn bind(&self, frame: &Frame, batch: &mut Batch<'_>) {
        let head = messages::decode_bind_head(frame.body());
        match head.and_then(|h| self.get(h.statement).cloned().map(|d| (h, d))) {
            Some((h, def)) if !h.statement.is_empty() => {
                batch.ensure(&def);
                messages::bind_renamed(&mut batch.out, h.portal, &def.server_name(), h.rest);
                batch.queue.push_back(Expect::Server { kind: ReplyKind::Bind, forward: true });
            }
            Some((_, def)) => {
                batch.ensure_unnamed(&def);
                batch.forward(frame, Some(ReplyKind::Bind));
            }
            None => batch.forward(frame, Some(ReplyKind::Bind)),
        }
    }

    fn describe(&self, frame: &Frame, batch: &mut Batch<'_>) {
        match messages::decode_target(frame.body()) {
            Some((b'S', name)) if !name.is_empty() && self.named.contains_key(name) => {
                let def = Arc::clone(&self.named[name]);
                batch.ensure(&def);
                messages::describe(&mut batch.out, b'S', &def.server_name());
                batch.queue.push_back(Expect::Server { kind: ReplyKind::Describe, forward: true });
            }
            Some((b'S', "")) => {
                if let Some(def) = self.unnamed.clone() {
                    batch.ensure_unnamed(&def);
                }
                batch.forward(frame, Some(ReplyKind::Describe));
            }
            _ => batch.forward(frame, Some(ReplyKind::Describe)),
        }
    }

    fn parse(&mut self, frame: &Frame, batch: &mut Batch<'_>) {
        let Some(p) = messages::decode_parse(frame.body()) else {
            // Let the server produce the error for a malformed Parse.
            return batch.forward(frame, Some(ReplyKind::Parse));
        };
        let def = Arc::new(StmtDef {
            hash: statement_hash(p.query, p.param_types),
            query: p.query.to_vec(),
            param_types: p.param_types.to_vec(),
            class: batch.classifier.classify(&String::from_utf8_lossy(p.query)),
        });
        let name = p.name.to_string();
        if name.is_empty() {
            batch.conn.unnamed = Some(def.hash);
            batch.forward(frame, Some(ReplyKind::Parse));
        } else if batch.conn.prepared.contains(&def.hash) {
            batch.synth(Synth::ParseComplete);
        } else {
            batch.prepare(&def, true);
        }
        self.define(&name, def);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(build: impl FnOnce(&mut BytesMut)) -> Frame {
        let mut b = BytesMut::new();
        build(&mut b);
        Frame::from_bytes(b.freeze())
    }

    #[test]
    fn accepted_prepares_and_closes_are_answered_locally_in_order() {
        let classifier = Classifier::new(16, Vec::new());
        let known = statement_hash(b"SELECT 1", &[0, 0]);
        let mut s = Statements::default();
        let batch = [
            frame(|b| messages::parse(b, "P_0", b"SELECT 1", &[0, 0])),
            frame(|b| messages::close(b, b'S', "old")),
            frame(messages::sync),
        ];
        let reply = s.answer_locally(&batch, |h| h == known, &classifier).expect("answered locally");
        assert_eq!(&reply[..], b"1\0\0\0\x043\0\0\0\x04Z\0\0\0\x05I");
        assert_eq!(s.get("P_0").map(|d| d.hash), Some(known));
        // Unknown text, an unnamed statement, or anything that runs needs a server.
        let unknown = [frame(|b| messages::parse(b, "P_1", b"SELECT 2", &[0, 0])), frame(messages::sync)];
        assert!(s.answer_locally(&unknown, |h| h == known, &classifier).is_none());
        let unnamed = [frame(|b| messages::parse(b, "", b"SELECT 1", &[0, 0])), frame(messages::sync)];
        assert!(s.answer_locally(&unnamed, |h| h == known, &classifier).is_none());
        let no_sync = [frame(|b| messages::parse(b, "P_2", b"SELECT 1", &[0, 0]))];
        assert!(s.answer_locally(&no_sync, |h| h == known, &classifier).is_none());
    }
}
