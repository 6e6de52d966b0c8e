//! Authentication crypto for both sides of the proxy: pure, synchronous, no IO.
//!
//! Owns:
//! - [`ScramVerifier`]: PostgreSQL's stored `SCRAM-SHA-256$...` form, parsed, derived or generated.
//! - [`ScramServer`]: the server side of SCRAM-SHA-256 (RFC 5802 / RFC 7677) that sluice runs
//!   against its clients, including a [mock](ScramServer::mock) for unknown users.
//! - [`ScramClient`] and [`SaltCache`]: the client side that sluice runs against PostgreSQL servers;
//!   the cache keeps PBKDF2 to once per (password, server salt, iterations).
//! - md5: [`md5_password_hash`], [`md5_response`], [`md5_verify`].
//! - [`PassThroughKeys`]: ClientKey/ServerKey of users looked up with auth_query, so sluice can
//!   log in to servers as them with SCRAM and no password ([`ScramClient::with_keys`]).
//!
//! Must not touch: sockets, message framing (`AuthenticationSASL`/`SASLContinue`/`SASLFinal` are
//! framed by the caller, which hands us the raw SASL payload bytes), config, async runtimes.
//!
//! Cost rule: PBKDF2 lives only in `crypto::salted_password`, which is called by
//! [`ScramVerifier::derive`] (once per user at config load) and by [`ScramClient`] through
//! [`SaltCache`]. The server side ([`ScramServer`]) never calls it: a login costs a few HMACs.
//!
//! Passwords are SASLprep-normalized (RFC 4013, via the `stringprep` crate) before PBKDF2, falling
//! back to the raw bytes when SASLprep rejects them, exactly as PostgreSQL and libpq do: without it
//! a non-ASCII password (NFKC, non-ASCII spaces, soft hyphens) would not match a PostgreSQL-made
//! verifier. Printable ASCII passes through unchanged.

mod attrs;
mod client;
mod crypto;
mod md5;
mod passthrough;
mod salt_cache;
mod server;
mod verifier;

#[cfg(test)]
mod tests;

pub use client::ScramClient;
pub use md5::{md5_password_hash, md5_response, md5_verify};
pub use passthrough::{PassThroughKeys, ScramKeys};
pub use salt_cache::SaltCache;
pub use server::{ChannelBinding, ScramServer};
pub use verifier::{looks_like_verifier, ScramVerifier};

/// The SASL mechanism name sluice offers and uses.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// Which SCRAM message (or stored form) a [`AuthError::Malformed`] refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramMessage {
    /// The stored `SCRAM-SHA-256$...` verifier.
    Verifier,
    /// client-first-message (client -> server).
    ClientFirst,
    /// server-first-message (server -> client).
    ServerFirst,
    /// client-final-message (client -> server).
    ClientFinal,
    /// server-final-message (server -> client).
    ServerFinal,
}

impl std::fmt::Display for ScramMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ScramMessage::Verifier => "SCRAM verifier",
            ScramMessage::ClientFirst => "SCRAM client-first-message",
            ScramMessage::ServerFirst => "SCRAM server-first-message",
            ScramMessage::ClientFinal => "SCRAM client-final-message",
            ScramMessage::ServerFinal => "SCRAM server-final-message",
        })
    }
}

/// Why an authentication step failed.
///
/// Only [`AuthError::WrongPassword`] means "the credentials were wrong"; callers facing a client
/// should report every variant the same way (SQLSTATE 28P01) and log the detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A message or the stored verifier could not be parsed.
    #[error("malformed {message}: {reason}")]
    Malformed {
        /// Which message was malformed.
        message: ScramMessage,
        /// Which part was wrong.
        reason: &'static str,
    },
    /// The password (proof or md5 response) did not match, or the user is unknown (mock exchange).
    #[error("password authentication failed")]
    WrongPassword,
    /// The client asked for channel binding (`p=...`), but sluice does not offer SCRAM-SHA-256-PLUS.
    #[error("channel binding {0:?} is not supported (SCRAM-SHA-256-PLUS is not offered)")]
    ChannelBindingUnsupported(String),
    /// The GS2 flag does not fit the mechanism or what was offered (PostgreSQL's "channel
    /// binding negotiation error"): e.g. a downgrade from SCRAM-SHA-256-PLUS.
    #[error("SCRAM channel binding negotiation error: {0}")]
    ChannelBindingNegotiation(&'static str),
    /// The `c=` attribute of client-final does not echo the GS2 header of client-first (and,
    /// with channel binding, the hash of sluice's certificate).
    #[error("channel binding data in client-final does not match client-first")]
    ChannelBindingMismatch,
    /// The client used a feature SCRAM allows but PostgreSQL (and so sluice) does not support.
    #[error("unsupported SCRAM feature: {0}")]
    Unsupported(&'static str),
    /// The nonce in a later message does not continue the one already exchanged.
    #[error("SCRAM nonce mismatch")]
    NonceMismatch,
    /// The server asked for an iteration count outside what sluice accepts.
    #[error("SCRAM iteration count {0} is out of range (1..={max})", max = crypto::MAX_ITERATIONS)]
    IterationsOutOfRange(u32),
    /// The server's signature (server-final `v=`) is wrong: the server does not know the password.
    #[error("SCRAM server signature mismatch")]
    ServerSignatureMismatch,
    /// The server ended the exchange with `e=<text>`.
    #[error("server reported SCRAM error: {0}")]
    ServerError(String),
    /// A step was called out of order (e.g. `client_final` before `client_first`, or after failure).
    #[error("SCRAM step called out of order: {0}")]
    OutOfOrder(&'static str),
}

impl AuthError {
    /// Shorthand for a [`AuthError::Malformed`].
    pub(crate) fn malformed(message: ScramMessage, reason: &'static str) -> Self {
        AuthError::Malformed { message, reason }
    }
}
