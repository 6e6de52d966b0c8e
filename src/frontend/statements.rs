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

/// A translated batch: bytes for the server and the replies they will produce.
#[derive(Default)]
pub struct Translated {
    /// Messages to send.
    pub out: BytesMut,
    /// Hashes newly assumed present on the connection (forgotten if the unit fails).
    pub added: Vec<u64>,
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

    /// Translate one client message of an extended batch for `conn`.
    pub fn translate(
        &mut self,
        frame: &Frame,
        conn: &mut ServerConn,
        t: &mut Translated,
        queue: &mut VecDeque<Expect>,
        classifier: &Classifier,
    ) {
        let forward = |kind| Expect::Server { kind, forward: true };
        match frame.tag() {
            tag::PARSE => self.parse(frame, conn, t, queue, classifier),
            tag::BIND => {
                let head = messages::decode_bind_head(frame.body());
                match head.and_then(|h| self.get(h.statement).cloned().map(|d| (h, d))) {
                    Some((h, def)) if !h.statement.is_empty() => {
                        ensure(conn, &def, t, queue);
                        messages::bind_renamed(&mut t.out, h.portal, &def.server_name(), h.rest);
                    }
                    Some((_, def)) => {
                        ensure_unnamed(conn, &def, t, queue);
                        t.out.extend_from_slice(frame.bytes());
                    }
                    None => t.out.extend_from_slice(frame.bytes()),
                }
                queue.push_back(forward(ReplyKind::Bind));
            }
            tag::DESCRIBE => {
                match messages::decode_target(frame.body()) {
                    Some((b'S', name)) if !name.is_empty() && self.named.contains_key(name) => {
                        let def = Arc::clone(&self.named[name]);
                        ensure(conn, &def, t, queue);
                        messages::describe(&mut t.out, b'S', &def.server_name());
                    }
                    Some((b'S', "")) => {
                        if let Some(def) = self.unnamed.clone() {
                            ensure_unnamed(conn, &def, t, queue);
                        }
                        t.out.extend_from_slice(frame.bytes());
                    }
                    _ => t.out.extend_from_slice(frame.bytes()),
                }
                queue.push_back(forward(ReplyKind::Describe));
            }
            tag::CLOSE => match messages::decode_target(frame.body()) {
                Some((b'S', name)) if !name.is_empty() => {
                    // Keep the server-side statement cached for other clients; answer ourselves.
                    self.named.remove(name);
                    queue.push_back(Expect::Synth(Synth::CloseComplete));
                }
                _ => {
                    t.out.extend_from_slice(frame.bytes());
                    queue.push_back(forward(ReplyKind::Close));
                }
            },
            other => {
                t.out.extend_from_slice(frame.bytes());
                let kind = match other {
                    tag::EXECUTE => Some(ReplyKind::Execute),
                    tag::SYNC => Some(ReplyKind::Sync),
                    _ => None,
                };
                queue.extend(kind.map(forward));
            }
        }
    }

    fn parse(
        &mut self,
        frame: &Frame,
        conn: &mut ServerConn,
        t: &mut Translated,
        queue: &mut VecDeque<Expect>,
        classifier: &Classifier,
    ) {
        let Some(p) = messages::decode_parse(frame.body()) else {
            // Let the server produce the error for a malformed Parse.
            t.out.extend_from_slice(frame.bytes());
            queue.push_back(Expect::Server { kind: ReplyKind::Parse, forward: true });
            return;
        };
        let def = Arc::new(StmtDef {
            hash: statement_hash(p.query, p.param_types),
            query: p.query.to_vec(),
            param_types: p.param_types.to_vec(),
            class: classifier.classify(&String::from_utf8_lossy(p.query)),
        });
        let name = p.name.to_string();
        if name.is_empty() {
            t.out.extend_from_slice(frame.bytes());
            conn.unnamed = Some(def.hash);
            queue.push_back(Expect::Server { kind: ReplyKind::Parse, forward: true });
        } else if conn.prepared.contains(&def.hash) {
            queue.push_back(Expect::Synth(Synth::ParseComplete));
        } else {
            prepare(conn, &def, t, queue, true);
        }
        self.define(&name, def);
    }
}

/// Make sure `conn` has the named statement, preparing it (replies swallowed) if not.
fn ensure(conn: &mut ServerConn, def: &StmtDef, t: &mut Translated, queue: &mut VecDeque<Expect>) {
    if !conn.prepared.contains(&def.hash) {
        prepare(conn, def, t, queue, false);
    }
}

/// Re-create the unnamed statement if this connection's unnamed slot holds something else.
fn ensure_unnamed(conn: &mut ServerConn, def: &StmtDef, t: &mut Translated, queue: &mut VecDeque<Expect>) {
    if conn.unnamed != Some(def.hash) {
        messages::parse(&mut t.out, "", &def.query, &def.param_types);
        queue.push_back(Expect::Server { kind: ReplyKind::Parse, forward: false });
        conn.unnamed = Some(def.hash);
    }
}

fn prepare(conn: &mut ServerConn, def: &StmtDef, t: &mut Translated, queue: &mut VecDeque<Expect>, forward: bool) {
    let name = def.server_name();
    // A Close first makes the Parse succeed even if an earlier failed unit left the name behind.
    messages::close(&mut t.out, b'S', &name);
    queue.push_back(Expect::Server { kind: ReplyKind::Close, forward: false });
    messages::parse(&mut t.out, &name, &def.query, &def.param_types);
    queue.push_back(Expect::Server { kind: ReplyKind::Parse, forward });
    conn.prepared.insert(def.hash);
    t.added.push(def.hash);
}
