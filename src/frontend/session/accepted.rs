//! Statements a server already accepted, so that a later Parse of one needs no connection.

use super::*;

/// Identity of a statement as a session would prepare it: same text and types, same database,
/// user and session state.
fn accepted_key(database: &str, user: &str, state: u64, statement: u64) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (database, user, state, statement).hash(&mut h);
    h.finish()
}

/// Most statements remembered as accepted by a server (then the memory starts over).
const MAX_ACCEPTED_STATEMENTS: usize = 100_000;

impl Session<'_> {
    pub(super) fn answer_locally(&mut self, frames: &Frames) -> Option<BytesMut> {
        // The process-wide lock only for a batch of the one shape that can be answered here.
        if !crate::frontend::statements::may_answer_locally(frames) {
            return None;
        }
        let accepted = self.shared.accepted_statements.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let info = self.entry.info();
        let (database, user, state) = (&*info.database, &*info.user, self.params.fingerprint());
        let key = |hash| accepted_key(database, user, state, hash);
        self.rare.get().statements.answer_locally(frames, |h| accepted.contains(&key(h)), &self.classifier)
    }

    /// Remember the named statements a server just accepted for this kind of session.
    pub(super) fn note_accepted(&self, unit: &Unit) {
        let Unit::Extended(frames) = unit else { return };
        // A Parse's body starts with its statement's name: an unnamed one (every Parse of a
        // driver's unnamed statement) is not decoded, and a unit without a named Parse (every
        // execution: known from the run's kinds, without a walk) builds no list.
        if !frames.kinds().any(Kinds::NAMED_PARSE) {
            return;
        }
        let named_parse = |f: &Msg<'_>| f.tag() == tag::PARSE && f.body().first().is_some_and(|&b| b != 0);
        let keys: Vec<u64> = frames
            .iter()
            .filter(named_parse)
            .filter_map(|f| messages::decode_parse(f.body()))
            .filter(|p| !p.name.is_empty())
            .map(|p| {
                let statement = crate::frontend::statements::statement_hash(p.query, p.param_types);
                accepted_key(self.database(), self.user(), self.params.fingerprint(), statement)
            })
            .collect();
        if keys.is_empty() {
            return;
        }
        let mut accepted = self.shared.accepted_statements.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if accepted.len() + keys.len() > MAX_ACCEPTED_STATEMENTS {
            accepted.clear();
        }
        accepted.extend(keys);
    }
}
