//! The client side of SCRAM-SHA-256: what sluice runs against PostgreSQL servers.
//!
//! Exchange: `client_first() -> client-first`, `server_first(server-first) -> client-final`,
//! `server_final(server-final) -> ()`. The one PBKDF2 goes through the [`SaltCache`].

use std::sync::Arc;

use super::attrs::{self, Attrs};
use super::crypto::{self, ct_eq, xor, Key};
use super::salt_cache::ClientKeys;
use super::{AuthError, SaltCache, ScramKeys, ScramMessage};

/// What the client side proves itself with.
enum Credential {
    /// A password: PBKDF2 and the keys derived from it (through the cache) with the server's
    /// salt.
    Password(Vec<u8>, SaltCache),
    /// Keys recovered from a client's own login (pass-through): no PBKDF2, and the server's
    /// salt and iterations must be those of the verifier the keys came from.
    Keys(ScramKeys),
}

/// GS2 header: no channel binding, no authzid. Its base64 is the `c=biws` of client-final.
const GS2_HEADER: &str = "n,,";

/// Where a client-side exchange stands.
enum State {
    /// client-first not produced yet.
    Start,
    /// client-first was produced; waiting for server-first.
    SentFirst {
        /// client-first-message-bare, part of AuthMessage.
        client_first_bare: String,
    },
    /// client-final was produced; waiting for server-final carrying this signature.
    SentFinal {
        /// `HMAC(ServerKey, AuthMessage)`.
        server_signature: Key,
    },
    /// The exchange ended (successfully or not).
    Finished,
}

/// One client-side SCRAM-SHA-256 exchange with one server.
pub struct ScramClient {
    credential: Credential,
    /// Sent in `n=`; PostgreSQL ignores it, so sluice sends it empty (tests use the RFC's `user`).
    username: String,
    nonce: String,
    state: State,
}

impl ScramClient {
    /// Starts an exchange for `password` (SASLprep-normalized as libpq does), using `cache` for
    /// PBKDF2. The cache is cloned (an `Arc`), not borrowed.
    pub fn new(password: &str, cache: &SaltCache) -> Self {
        Self::build(password, cache, "", crypto::new_nonce())
    }

    /// A client with a fixed username and nonce, for known-answer tests only.
    #[cfg(test)]
    pub(crate) fn with_nonce(password: &str, cache: &SaltCache, username: &str, nonce: &str) -> Self {
        Self::build(password, cache, username, nonce.to_string())
    }

    fn build(password: &str, cache: &SaltCache, username: &str, nonce: String) -> Self {
        let credential = Credential::Password(crypto::normalize(password).into_owned(), cache.clone());
        ScramClient { credential, username: username.to_string(), nonce, state: State::Start }
    }

    /// Starts an exchange that proves the ClientKey of `keys` (SCRAM pass-through).
    pub fn with_keys(keys: ScramKeys) -> Self {
        let credential = Credential::Keys(keys);
        ScramClient { credential, username: String::new(), nonce: crypto::new_nonce(), state: State::Start }
    }

    /// The client-first-message: `n,,n=,r=<nonce>`. Calling it again restarts the exchange.
    pub fn client_first(&mut self) -> Vec<u8> {
        let client_first_bare = format!("n={},r={}", self.username, self.nonce);
        let msg = format!("{GS2_HEADER}{client_first_bare}").into_bytes();
        self.state = State::SentFirst { client_first_bare };
        msg
    }

    /// Reads server-first-message and returns client-final-message (`c=biws,r=...,p=...`).
    ///
    /// # Errors
    /// [`AuthError::Malformed`], [`AuthError::NonceMismatch`] if the server's nonce does not extend
    /// ours, [`AuthError::IterationsOutOfRange`], [`AuthError::Unsupported`] for `m=`,
    /// [`AuthError::OutOfOrder`] if `client_first` was not called. Any error ends the exchange.
    pub fn server_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, AuthError> {
        let client_first_bare = match std::mem::replace(&mut self.state, State::Finished) {
            State::SentFirst { client_first_bare } => client_first_bare,
            _ => return Err(AuthError::OutOfOrder("server-first before client-first")),
        };
        let first = parse_server_first(msg)?;
        if first.nonce.len() <= self.nonce.len() || !first.nonce.starts_with(self.nonce.as_str()) {
            return Err(AuthError::NonceMismatch);
        }
        let server_first = attrs::text(ScramMessage::ServerFirst, msg)?;
        let keys = match &self.credential {
            Credential::Password(password, cache) => cache.keys(password, &first.salt, first.iterations),
            Credential::Keys(keys) => Arc::new(ClientKeys::new(keys.client_key, &keys.server_key)),
        };
        let without_proof = format!("c={},r={}", crypto::b64(GS2_HEADER.as_bytes()), first.nonce);
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let client_signature = keys.stored.sign(&[auth_message.as_bytes()]);
        let proof = xor(&keys.client_key, &client_signature);
        let server_signature = keys.server.sign(&[auth_message.as_bytes()]);
        self.state = State::SentFinal { server_signature };
        Ok(format!("{without_proof},p={}", crypto::b64(&proof)).into_bytes())
    }

    /// Reads server-final-message and checks the server's signature (proof that it knows the
    /// password too).
    ///
    /// # Errors
    /// [`AuthError::ServerError`] for `e=...`, [`AuthError::ServerSignatureMismatch`],
    /// [`AuthError::Malformed`], [`AuthError::OutOfOrder`] if `server_first` did not succeed.
    pub fn server_final(&mut self, msg: &[u8]) -> Result<(), AuthError> {
        const M: ScramMessage = ScramMessage::ServerFinal;
        let expected = match std::mem::replace(&mut self.state, State::Finished) {
            State::SentFinal { server_signature } => server_signature,
            _ => return Err(AuthError::OutOfOrder("server-final before server-first")),
        };
        let text = attrs::text(M, msg)?;
        if let Some(error) = text.strip_prefix("e=") {
            let error = error.split(',').next().unwrap_or_default();
            return Err(AuthError::ServerError(error.to_string()));
        }
        let mut a = Attrs::new(M, text);
        let signature = a.expect(b'v', "neither e= (error) nor v= (verifier)")?;
        a.extensions()?;
        let signature = crypto::unb64(signature).ok_or(AuthError::malformed(M, "v= is not base64"))?;
        if !ct_eq(&signature, &expected) {
            return Err(AuthError::ServerSignatureMismatch);
        }
        Ok(())
    }
}

impl std::fmt::Debug for ScramClient {
    /// Never shows the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramClient").finish_non_exhaustive()
    }
}

/// The parts of server-first-message.
struct ServerFirst<'a> {
    nonce: &'a str,
    salt: Vec<u8>,
    iterations: u32,
}

fn parse_server_first(msg: &[u8]) -> Result<ServerFirst<'_>, AuthError> {
    const M: ScramMessage = ScramMessage::ServerFirst;
    let text = attrs::text(M, msg)?;
    if text.starts_with("m=") {
        return Err(AuthError::Unsupported("mandatory extension (m=) in server-first"));
    }
    let mut a = Attrs::new(M, text);
    let nonce = a.expect(b'r', "missing r= (nonce)")?;
    attrs::check_nonce(M, nonce)?;
    let salt = a.expect(b's', "missing s= (salt) after r=")?;
    let salt = crypto::unb64(salt).ok_or(AuthError::malformed(M, "salt is not base64"))?;
    if salt.is_empty() {
        return Err(AuthError::malformed(M, "salt is empty"));
    }
    let iterations = a.expect(b'i', "missing i= (iteration count) after s=")?;
    let iterations: u32 = iterations.parse().map_err(|_| AuthError::malformed(M, "iteration count is not a number"))?;
    if iterations == 0 || iterations > crypto::MAX_ITERATIONS {
        return Err(AuthError::IterationsOutOfRange(iterations));
    }
    a.extensions()?;
    Ok(ServerFirst { nonce, salt, iterations })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER_FIRST: &[u8] =
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";

    fn rfc_client(cache: &SaltCache) -> ScramClient {
        ScramClient::with_nonce("pencil", cache, "user", "rOprNGfwEbeRWgbNEkqO")
    }

    #[test]
    fn rfc7677_exchange_from_the_client_side() {
        let cache = SaltCache::default();
        let mut c = rfc_client(&cache);
        assert_eq!(c.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let fin = c.server_first(SERVER_FIRST).unwrap();
        assert_eq!(
            String::from_utf8(fin).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        c.server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=").unwrap();
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn production_client_first_has_an_empty_username_and_random_nonce() {
        let cache = SaltCache::default();
        let first = ScramClient::new("pw", &cache).client_first();
        let text = String::from_utf8(first).unwrap();
        let nonce = text.strip_prefix("n,,n=,r=").unwrap();
        assert_eq!(nonce.len(), 24);
    }

    #[test]
    fn server_final_errors() {
        let cache = SaltCache::default();
        let cases: [(&[u8], AuthError); 4] = [
            (b"e=invalid-proof", AuthError::ServerError("invalid-proof".into())),
            (b"v=AAAA", AuthError::ServerSignatureMismatch),
            (b"x=1", AuthError::malformed(ScramMessage::ServerFinal, "neither e= (error) nor v= (verifier)")),
            (b"v=!!", AuthError::malformed(ScramMessage::ServerFinal, "v= is not base64")),
        ];
        for (msg, want) in cases {
            let mut c = rfc_client(&cache);
            c.client_first();
            c.server_first(SERVER_FIRST).unwrap();
            assert_eq!(c.server_final(msg), Err(want));
            assert!(matches!(c.server_final(msg), Err(AuthError::OutOfOrder(_))));
        }
    }

    #[test]
    fn server_first_errors() {
        let cache = SaltCache::default();
        let cases: [(&[u8], AuthError); 7] = [
            (b"r=someoneelse,s=c2FsdA==,i=4096", AuthError::NonceMismatch),
            (b"r=rOprNGfwEbeRWgbNEkqO,s=c2FsdA==,i=4096", AuthError::NonceMismatch),
            (b"r=rOprNGfwEbeRWgbNEkqOx,s=c2FsdA==,i=0", AuthError::IterationsOutOfRange(0)),
            (b"r=rOprNGfwEbeRWgbNEkqOx,s=c2FsdA==,i=4294967295", AuthError::IterationsOutOfRange(u32::MAX)),
            (b"r=rOprNGfwEbeRWgbNEkqOx,s=,i=1", AuthError::malformed(ScramMessage::ServerFirst, "salt is empty")),
            (
                b"r=rOprNGfwEbeRWgbNEkqOx,i=1",
                AuthError::malformed(ScramMessage::ServerFirst, "missing s= (salt) after r="),
            ),
            (b"m=x,r=a,s=c2FsdA==,i=1", AuthError::Unsupported("mandatory extension (m=) in server-first")),
        ];
        for (msg, want) in cases {
            let mut c = rfc_client(&cache);
            c.client_first();
            assert_eq!(c.server_first(msg), Err(want), "{}", String::from_utf8_lossy(msg));
        }
        let mut c = rfc_client(&cache);
        assert!(matches!(c.server_first(SERVER_FIRST), Err(AuthError::OutOfOrder(_))));
        assert!(cache.is_empty(), "no PBKDF2 for rejected messages");
    }
}
