//! The PostgreSQL v3 wire protocol, as far as sluice needs it.
//!
//! Only this module reads tags and lengths. [`framer`] walks message headers over `BytesMut`
//! without copying payloads; [`startup`] parses the untagged startup-phase packets strictly;
//! [`messages`] builds the few messages sluice sends itself and decodes the few it acts on.

pub mod framer;
pub mod frames;
pub mod messages;
pub mod startup;

pub use framer::{Frame, FrameError, FrameReader};
pub use frames::{Frames, Kinds, Msg};

/// Backend (server -> client) and frontend (client -> server) message tags sluice acts on.
pub mod tag {
    /// Simple query.
    pub const QUERY: u8 = b'Q';
    /// Extended: Parse.
    pub const PARSE: u8 = b'P';
    /// Extended: Bind.
    pub const BIND: u8 = b'B';
    /// Extended: Describe.
    pub const DESCRIBE: u8 = b'D';
    /// Extended: Execute.
    pub const EXECUTE: u8 = b'E';
    /// Extended: Close.
    pub const CLOSE: u8 = b'C';
    /// Extended: Sync.
    pub const SYNC: u8 = b'S';
    /// Extended: Flush.
    pub const FLUSH: u8 = b'H';
    /// Terminate.
    pub const TERMINATE: u8 = b'X';
    /// Password / SASL response.
    pub const PASSWORD: u8 = b'p';
    /// Function call (legacy fast-path).
    pub const FUNCTION_CALL: u8 = b'F';
    /// CopyData (both directions).
    pub const COPY_DATA: u8 = b'd';
    /// CopyDone (both directions).
    pub const COPY_DONE: u8 = b'c';
    /// CopyFail (frontend).
    pub const COPY_FAIL: u8 = b'f';

    /// Authentication request.
    pub const AUTHENTICATION: u8 = b'R';
    /// ParameterStatus.
    pub const PARAMETER_STATUS: u8 = b'S';
    /// BackendKeyData.
    pub const BACKEND_KEY_DATA: u8 = b'K';
    /// ReadyForQuery.
    pub const READY_FOR_QUERY: u8 = b'Z';
    /// ErrorResponse.
    pub const ERROR_RESPONSE: u8 = b'E';
    /// NoticeResponse.
    pub const NOTICE_RESPONSE: u8 = b'N';
    /// NotificationResponse.
    pub const NOTIFICATION: u8 = b'A';
    /// ParseComplete.
    pub const PARSE_COMPLETE: u8 = b'1';
    /// BindComplete.
    pub const BIND_COMPLETE: u8 = b'2';
    /// CloseComplete.
    pub const CLOSE_COMPLETE: u8 = b'3';
    /// ParameterDescription.
    pub const PARAMETER_DESCRIPTION: u8 = b't';
    /// RowDescription.
    pub const ROW_DESCRIPTION: u8 = b'T';
    /// DataRow.
    pub const DATA_ROW: u8 = b'D';
    /// NoData.
    pub const NO_DATA: u8 = b'n';
    /// CommandComplete.
    pub const COMMAND_COMPLETE: u8 = b'C';
    /// EmptyQueryResponse.
    pub const EMPTY_QUERY: u8 = b'I';
    /// PortalSuspended.
    pub const PORTAL_SUSPENDED: u8 = b's';
    /// CopyInResponse.
    pub const COPY_IN_RESPONSE: u8 = b'G';
    /// CopyOutResponse.
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    /// CopyBothResponse.
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
}

/// The transaction status byte of ReadyForQuery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxStatus {
    /// `I`: not in a transaction block.
    Idle,
    /// `T`: in a transaction block.
    InTransaction,
    /// `E`: in a failed transaction block.
    Failed,
}

impl TxStatus {
    /// Decode the status byte; `None` for anything else.
    #[must_use]
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            b'I' => Some(TxStatus::Idle),
            b'T' => Some(TxStatus::InTransaction),
            b'E' => Some(TxStatus::Failed),
            _ => None,
        }
    }

    /// The status byte.
    #[must_use]
    pub fn as_byte(self) -> u8 {
        match self {
            TxStatus::Idle => b'I',
            TxStatus::InTransaction => b'T',
            TxStatus::Failed => b'E',
        }
    }
}
