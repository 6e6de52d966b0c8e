//! Errors: who failed (client, server, proxy), whether the work may move elsewhere, and which
//! SQLSTATE the client sees.

use crate::protocol::messages::ErrorInfo;

/// SQLSTATE codes sluice itself sends.
pub mod sqlstate {
    /// protocol_violation
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    /// invalid_password
    pub const INVALID_PASSWORD: &str = "28P01";
    /// invalid_authorization_specification
    pub const INVALID_AUTHORIZATION: &str = "28000";
    /// invalid_catalog_name
    pub const INVALID_CATALOG_NAME: &str = "3D000";
    /// too_many_connections
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    /// insufficient_resources (no server connection in time)
    pub const INSUFFICIENT_RESOURCES: &str = "53000";
    /// connection_failure
    pub const CONNECTION_FAILURE: &str = "08006";
    /// sqlclient_unable_to_establish_sqlconnection
    pub const UNABLE_TO_CONNECT: &str = "08001";
    /// cannot_connect_now: no node can serve the statement (no primary, no replica)
    pub const CANNOT_CONNECT_NOW: &str = "57P03";
    /// feature_not_supported
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    /// program_limit_exceeded (message too large)
    pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
    /// read_only_sql_transaction
    pub const READ_ONLY_SQL_TRANSACTION: &str = "25006";
    /// serialization_failure: on a hot standby, a statement cancelled by a recovery conflict
    /// (the replica replayed a lock, a vacuum or a tablespace drop its snapshot still needed)
    pub const SERIALIZATION_FAILURE: &str = "40001";
    /// deadlock_detected: on a hot standby, a statement cancelled by a buffer-pin recovery conflict
    pub const DEADLOCK_DETECTED: &str = "40P01";
    /// admin_shutdown
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    /// idle_session_timeout
    pub const IDLE_SESSION_TIMEOUT: &str = "57P05";
    /// internal_error
    pub const INTERNAL_ERROR: &str = "XX000";
}

/// A failure talking to a server.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// TCP connect failed.
    #[error("cannot connect to node {node}: {source}")]
    Connect {
        /// Node name.
        node: String,
        /// OS error.
        source: std::io::Error,
    },
    /// TLS to the server was refused or failed (the certificate, or the server offers none).
    #[error("node {node}: {detail}")]
    Tls {
        /// Node name.
        node: String,
        /// What went wrong, e.g. the certificate's issuer is unknown.
        detail: String,
    },
    /// Connect, startup or auth took too long.
    #[error("timed out connecting to node {node}")]
    ConnectTimeout {
        /// Node name.
        node: String,
    },
    /// The server answered with an ErrorResponse (during startup or a sluice-injected command).
    #[error("node {node}: {}", .info.message)]
    Server {
        /// Node name.
        node: String,
        /// The server's error.
        info: ErrorInfo,
    },
    /// The server wants an authentication method sluice does not speak, or sluice lacks the password.
    #[error("node {node}: {detail}")]
    Auth {
        /// Node name.
        node: String,
        /// What went wrong.
        detail: String,
    },
    /// The server broke the protocol or closed the connection.
    #[error("node {node}: {detail}")]
    Protocol {
        /// Node name.
        node: String,
        /// What went wrong.
        detail: String,
    },
    /// No server connection became free in time.
    #[error("no server connection to node {node} became free within {waited_ms} ms (pool size {size})")]
    CheckoutTimeout {
        /// Node name.
        node: String,
        /// Time waited.
        waited_ms: u128,
        /// Pool size.
        size: usize,
    },
}

impl BackendError {
    /// The SQLSTATE the client sees.
    #[must_use]
    pub fn sqlstate(&self) -> &str {
        match self {
            BackendError::Server { info, .. } if !info.code.is_empty() => &info.code,
            BackendError::Server { .. } => sqlstate::INTERNAL_ERROR,
            BackendError::Connect { .. } | BackendError::ConnectTimeout { .. } | BackendError::Tls { .. } => {
                sqlstate::UNABLE_TO_CONNECT
            }
            BackendError::Auth { .. } => sqlstate::INVALID_AUTHORIZATION,
            BackendError::Protocol { .. } => sqlstate::CONNECTION_FAILURE,
            BackendError::CheckoutTimeout { .. } => sqlstate::INSUFFICIENT_RESOURCES,
        }
    }

    /// True if a connection the server had accepted was lost (it closed, reset, or said it
    /// was terminated: `57P01`), as opposed to a connect refused or timed out, or a refusal
    /// (authentication, too many connections, the node starting or shutting down). A backend
    /// terminated while its connection was being opened or brought in line with a session is
    /// this: a fresh connection to the same node may well work at once.
    #[must_use]
    pub fn is_lost_connection(&self) -> bool {
        matches!(self, BackendError::Protocol { .. })
            || matches!(self, BackendError::Server { info, .. } if info.code == sqlstate::ADMIN_SHUTDOWN)
    }

    /// True if nothing reached a server, so another node may be tried.
    #[must_use]
    pub fn may_try_elsewhere(&self) -> bool {
        matches!(
            self,
            BackendError::Connect { .. }
                | BackendError::ConnectTimeout { .. }
                | BackendError::CheckoutTimeout { .. }
                | BackendError::Tls { .. }
        ) || matches!(self, BackendError::Server { info, .. } if info.code.starts_with("57P") || info.code.starts_with("08"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: &str) -> BackendError {
        let info = ErrorInfo { severity: "FATAL".into(), code: code.into(), message: "m".into() };
        BackendError::Server { node: "n".into(), info }
    }

    /// A connection lost after the server accepted it may be opened again at once; a node that
    /// refuses, times out or turns the login away is left to the failover hold or the client.
    #[test]
    fn only_an_accepted_connection_lost_is_a_loss() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let table = [
            (BackendError::Protocol { node: "n".into(), detail: "server closed the connection".into() }, true),
            (server(sqlstate::ADMIN_SHUTDOWN), true),
            (server(sqlstate::CANNOT_CONNECT_NOW), false),
            (server(sqlstate::TOO_MANY_CONNECTIONS), false),
            (server(sqlstate::INVALID_PASSWORD), false),
            (BackendError::Connect { node: "n".into(), source: refused }, false),
            (BackendError::ConnectTimeout { node: "n".into() }, false),
            (BackendError::CheckoutTimeout { node: "n".into(), waited_ms: 1, size: 1 }, false),
            (BackendError::Auth { node: "n".into(), detail: "d".into() }, false),
        ];
        for (e, lost) in table {
            assert_eq!(e.is_lost_connection(), lost, "{e:?}");
        }
    }
}
