//! The end of the login: the parameters and key the client is told, with or without a server
//! connection.

use super::*;

impl Session<'_> {
    pub(super) async fn login(&mut self) -> Result<(), SessionEnd> {
        let params = match self.known_params() {
            Some(p) => p,
            None => match self.login_conn().await {
                Ok(p) => p,
                Err(e) => return Err(SessionEnd::fatal(e.sqlstate(), e.to_string(), Fault::Server)),
            },
        };
        let mut buf = BytesMut::new();
        messages::authentication(&mut buf, messages::auth_code::OK, &[]);
        for (k, v) in &params {
            messages::parameter_status(&mut buf, k, v);
        }
        messages::backend_key_data(&mut buf, self.key.pid, self.key.secret);
        messages::ready_for_query(&mut buf, TxStatus::Idle);
        self.send_client(&buf).await
    }

    /// Under transaction pooling, a pool of this database and user that has connected before
    /// already proved the login works: answer with its parameters (overridden by the client's
    /// own, as the server spells them), without waiting for a free server connection. A value
    /// the client spells in a way not seen before needs a server to say how it reports it.
    pub(super) fn known_params(&mut self) -> Option<Vec<(String, String)>> {
        if self.shared.config.pool.mode != PoolMode::Transaction {
            return None;
        }
        let topology = self.shared.topology.load();
        let pool = topology
            .nodes
            .iter()
            .filter(|n| n.role == Role::Primary || n.role == Role::Replica)
            .map(|n| self.pool(n.index))
            .find(|p| p.startup_params().is_some())?;
        let mut params = pool.startup_params()?.to_vec();
        for (k, v) in &mut params {
            if let Some((_, mine)) = self.params.params.iter().find(|(name, _)| name.eq_ignore_ascii_case(k)) {
                if mine != v {
                    *v = pool.server_spelling(k, mine)?;
                }
            }
        }
        Some(params)
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
        self.acquire_with(&class, super::conn::SyncMode::RoundTrip, super::conn::Rotation::Advance).await?;
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
