//! Why a session ends, typed: who is at fault and which SQLSTATE the client is told. The
//! helpers that word the errors a session sends (a lost server connection, a framing problem)
//! live here, so the phases only decide *that* something ends, not how it is phrased.

use crate::error::{sqlstate, BackendError};
use crate::protocol::framer::ReadError;
use crate::protocol::FrameError;

/// Whose fault an error is: decides what is logged and whether anything may be retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The client broke the protocol or a limit.
    Client,
    /// A server connection failed or refused.
    Server,
    /// sluice itself (a drain, an idle timeout, a limit of its own).
    Proxy,
}

/// The error for a unit that needed a Flush-held block on a replica ended and was not run: the
/// block set something sluice could not take along to the primary (see
/// `Session::settle_closed_block`), and running the unit without it could, say, write through
/// another `search_path`.
pub const SETTING_NOT_CARRIED: &str = "a session setting made in a block left open by Flush on a replica could not be \
     carried to the primary, so this statement was not run; the setting is no longer in force: set it again";

/// Why a session stops serving its client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// The client closed its socket (or it failed): nobody to tell.
    ClientGone,
    /// The client is told with a FATAL ErrorResponse, then closed.
    Fatal {
        /// SQLSTATE the client sees.
        code: String,
        /// Message text.
        message: String,
        /// Whose fault.
        fault: Fault,
    },
}

impl SessionEnd {
    /// A FATAL with this SQLSTATE.
    pub fn fatal(code: &str, message: impl Into<String>, fault: Fault) -> Self {
        SessionEnd::Fatal { code: code.to_string(), message: message.into(), fault }
    }

    /// A client message that cannot be read: too large (`54000`), of an unknown type or badly
    /// framed (`08P01`); a socket that closed or failed is simply gone.
    pub fn unreadable(e: &ReadError) -> Self {
        match e {
            ReadError::Frame(f) => Self::bad_frame(f),
            ReadError::Io(_) | ReadError::Truncated => SessionEnd::ClientGone,
        }
    }

    /// A client message whose header is refused.
    pub fn bad_frame(f: &FrameError) -> Self {
        match f {
            FrameError::TooLarge { .. } => Self::fatal(sqlstate::PROGRAM_LIMIT_EXCEEDED, f.to_string(), Fault::Client),
            FrameError::UnknownTag(_) => {
                Self::fatal(sqlstate::PROTOCOL_VIOLATION, format!("{f}: closing the connection"), Fault::Client)
            }
            FrameError::LengthTooSmall(_) => Self::fatal(sqlstate::PROTOCOL_VIOLATION, f.to_string(), Fault::Client),
        }
    }

    /// The session's server connection died with state the session cannot continue without.
    pub fn server_lost(e: &BackendError, what: &str) -> Self {
        let message = format!("server connection lost ({e}); the session cannot continue: {what} was on it");
        Self::fatal(e.sqlstate(), message, Fault::Server)
    }
}

/// The error for a statement whose server connection died under it while the session can go
/// on (on a new connection).
pub fn statement_lost(e: &BackendError) -> String {
    format!(
        "server connection lost while running the statement ({e}); the session continues on a new server connection"
    )
}

/// The error for an extended block (statements before its Sync, outside a transaction block)
/// that had run a write when its server connection died: its implicit transaction was not
/// committed, whatever the client saw of the statements.
pub fn block_lost(e: &BackendError) -> String {
    format!(
        "server connection lost before the Sync of a block that wrote ({e}); its statements were rolled back (not committed); the session continues on a new server connection"
    )
}

/// The error for a statement whose server connection died with the session's open transaction.
pub fn transaction_lost(e: &BackendError) -> String {
    format!(
        "server connection lost while running the statement ({e}); its open transaction was rolled back; end it (ROLLBACK) and the session continues on a new server connection"
    )
}

/// The error for a transaction end (`COMMIT`...) whose server connection died under it: the
/// block is over, but whether the server committed before it died is unknown.
pub fn transaction_end_lost(e: &BackendError) -> String {
    format!(
        "server connection lost while ending the transaction ({e}); the transaction is over: it was rolled back unless the server committed it before the loss; the session continues on a new server connection"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_client_messages_get_their_sqlstate() {
        let code = |e: &ReadError| match SessionEnd::unreadable(e) {
            SessionEnd::Fatal { code, fault: Fault::Client, .. } => Some(code),
            _ => None,
        };
        let too_large = ReadError::Frame(FrameError::TooLarge { len: 10, max: 5 });
        assert_eq!(code(&too_large).as_deref(), Some(sqlstate::PROGRAM_LIMIT_EXCEEDED));
        let unknown = ReadError::Frame(FrameError::UnknownTag(0));
        assert_eq!(code(&unknown).as_deref(), Some(sqlstate::PROTOCOL_VIOLATION));
        assert_eq!(SessionEnd::unreadable(&ReadError::Truncated), SessionEnd::ClientGone);
        let lost = BackendError::Protocol { node: "n".into(), detail: "x".into() };
        assert!(matches!(SessionEnd::server_lost(&lost, "it"), SessionEnd::Fatal { fault: Fault::Server, .. }));
    }
}
