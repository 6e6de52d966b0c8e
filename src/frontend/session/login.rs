//! The end of the login: the parameters and key the client is told, with or without a server
//! connection.

use super::*;

/// Bytes reserved for the login reply before it is written.
const LOGIN_REPLY_CAPACITY: usize = 512;

impl Session<'_> {
    /// Write the login's reply behind `owed`, what authentication still owes the client
    /// (SCRAM's SASLFinal): one `send` for both, so the client wakes once (SASLFinal on its own
    /// was a `send` and a wake-up more per SCRAM login).
    pub(super) async fn login_reply(&mut self, owed: BytesMut) -> Result<(), SessionEnd> {
        let owed_len = owed.len();
        // Sized for the usual reply (AuthenticationOk, ~14 ParameterStatus, BackendKeyData,
        // ReadyForQuery: ~400 bytes), so writing it does not grow the buffer message by message.
        // A new buffer, `owed` copied in (~55 bytes): growing the exchange's buffer to this
        // size was a `realloc`, dearer than the `malloc` and `free`.
        let mut buf = BytesMut::with_capacity(LOGIN_REPLY_CAPACITY + owed_len);
        buf.extend_from_slice(&owed);
        drop(owed);
        messages::authentication(&mut buf, messages::auth_code::OK, &[]);
        if !self.known_params(&mut buf) {
            // Boxed: the first login of a pool only. Inline, its state (a checkout, ~2 KB) made
            // this future, boxed by the session for every login, too large for the allocator's
            // per-thread cache (a slower `malloc` and `free`, and a larger copy into the box).
            let params = match Box::pin(self.login_conn()).await {
                Ok(p) => p,
                Err(e) => {
                    // What was owed goes first, then the session's end writes the error.
                    if owed_len > 0 {
                        let _ = self.send_client(&buf[..owed_len]).await;
                    }
                    return Err(SessionEnd::fatal(e.sqlstate(), e.to_string(), Fault::Server));
                }
            };
            for (k, v) in &params {
                messages::parameter_status(&mut buf, k, v);
            }
        }
        messages::backend_key_data(&mut buf, self.key().pid(), self.key().secret());
        messages::ready_for_query(&mut buf, TxStatus::Idle);
        self.send_client(&buf).await
    }

    /// Under transaction pooling, a pool of this database and user that has connected before
    /// already proved the login works: write its parameters as ParameterStatus into `buf`
    /// (overridden by the client's own, as the server spells them), without waiting for a free
    /// server connection, and say so. A value the client spells in a way not seen before needs
    /// a server to say how it reports it: then `buf` is left as it was and the answer is false.
    ///
    /// Written straight from the pool's list: a login storm (`pgbench -C`) runs this per
    /// connection, and copying the list first cost two allocations per parameter.
    pub(super) fn known_params(&mut self, buf: &mut BytesMut) -> bool {
        if self.shared.config.pool.mode != PoolMode::Transaction {
            return false;
        }
        let Some(pool) = self.known_pool() else { return false };
        let Some(startup) = pool.startup_params() else { return false };
        if pool.write_login_status(Arc::as_ptr(&self.params).cast::<()>(), buf) {
            return true;
        }
        let generation = pool.spelling_generation();
        let start = buf.len();
        for (k, v) in startup {
            let mine = self.params.params.iter().find(|(name, _)| name.eq_ignore_ascii_case(k));
            match mine {
                Some((_, mine)) if mine != v => {
                    if pool
                        .with_server_spelling(k, mine, |spelled| messages::parameter_status(buf, k, spelled))
                        .is_none()
                    {
                        buf.truncate(start);
                        return false;
                    }
                }
                _ => messages::parameter_status(buf, k, v),
            }
        }
        let state: std::sync::Weak<SessionParams> = Arc::downgrade(&self.params);
        pool.keep_login_status(state, generation, &buf[start..]);
        true
    }

    /// The first pool of this session on a serving node that has logged in before.
    fn known_pool(&mut self) -> Option<Arc<Pool>> {
        let topology = self.shared.topology.load();
        topology
            .nodes
            .iter()
            .filter(|n| n.role == Role::Primary || n.role == Role::Replica)
            .map(|n| self.pool(n.index))
            .find(|p| p.startup_params().is_some())
    }

    /// Log in through a real server connection: checks the database and user, and yields the
    /// server's parameters with the session's applied. Session pooling keeps it for the client's
    /// life, so it must be the primary (session pooling trades read splitting for full session
    /// semantics); transaction pooling releases it at once.
    pub(super) async fn login_conn(&mut self) -> Result<Vec<(String, String)>, BackendError> {
        let class = match self.shared.config.pool.mode {
            PoolMode::Session => Class::write(Reason::Write),
            PoolMode::Transaction => Class::read(Reason::Empty),
        };
        // The login reports the server's parameters with the session's applied: answered first.
        self.acquire(&class, super::conn::SyncMode::RoundTrip, super::conn::Rotation::Advance).await?;
        let params = self.conn().server_params().to_vec();
        let pool = self.held.as_ref().map(|h| Arc::clone(h.checkout.pool()));
        for (k, mine) in &self.params.params {
            let reported = params.iter().find(|(name, _)| name.eq_ignore_ascii_case(k));
            if let (Some(pool), Some((_, reported))) = (&pool, reported) {
                pool.learn_spelling(k, mine, reported);
            }
        }
        self.release_if_done(TxStatus::Idle).await;
        Ok(params)
    }
}
