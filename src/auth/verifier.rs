//! The stored SCRAM-SHA-256 verifier, in PostgreSQL's `pg_authid.rolpassword` format:
//! `SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>`.

use std::fmt;
use std::str::FromStr;

use super::crypto::{self, HmacKey, Key};
use super::{AuthError, ScramMessage, SCRAM_SHA_256};

/// Iterations used by [`ScramVerifier::generate`] (PostgreSQL's default `scram_iterations`).
pub(crate) const DEFAULT_ITERATIONS: u32 = 4096;

/// Salt length used by [`ScramVerifier::generate`] (PostgreSQL's `SCRAM_DEFAULT_SALT_LEN`).
pub(crate) const DEFAULT_SALT_LEN: usize = 16;

/// What the server side needs to check a SCRAM-SHA-256 login without knowing the password.
///
/// Made ready for logins when it is made (parsed, derived): the HMAC keys StoredKey and
/// ServerKey with their padded blocks hashed ([`HmacKey`]) and server-first's `,s=...,i=...`
/// tail in text. A verifier is made once per configured user (kept with the credentials, made
/// again by a reload) or per auth_query lookup (kept in its cache), so a login copies two hash
/// states instead of hashing four blocks, and formats no salt. The fields are read through
/// methods: what is made ready cannot drift from the keys it was made from.
#[derive(Clone)]
pub struct ScramVerifier {
    /// PBKDF2 iteration count.
    iterations: u32,
    /// PBKDF2 salt (sent to clients in server-first).
    salt: Vec<u8>,
    /// `H(ClientKey)`: checks the client's proof.
    stored_key: Key,
    /// `HMAC(SaltedPassword, "Server Key")`: signs server-final.
    server_key: Key,
    /// StoredKey and ServerKey ready to sign.
    ready: ReadyKeys,
    /// `,s=<base64 salt>,i=<iterations>`: server-first after its nonce.
    first_tail: Box<str>,
}

/// StoredKey and ServerKey as ready HMAC keys.
#[derive(Clone)]
pub(crate) struct ReadyKeys {
    /// Signs AuthMessage into ClientSignature.
    pub(crate) stored: HmacKey,
    /// Signs AuthMessage into ServerSignature.
    pub(crate) server: HmacKey,
}

impl ReadyKeys {
    pub(crate) fn new(stored_key: &Key, server_key: &Key) -> Self {
        Self { stored: HmacKey::new(stored_key), server: HmacKey::new(server_key) }
    }
}

impl PartialEq for ScramVerifier {
    /// The stored form: what is made ready follows from it.
    fn eq(&self, other: &Self) -> bool {
        (self.iterations, &self.salt, &self.stored_key, &self.server_key)
            == (other.iterations, &other.salt, &other.stored_key, &other.server_key)
    }
}

impl Eq for ScramVerifier {}

impl ScramVerifier {
    /// A verifier from its parts, made ready for logins.
    fn new(iterations: u32, salt: Vec<u8>, stored_key: Key, server_key: Key) -> Self {
        let ready = ReadyKeys::new(&stored_key, &server_key);
        Self::with_ready(iterations, salt, stored_key, server_key, ready)
    }

    /// A verifier from its parts and the ready form of its keys (the mock exchange's, made
    /// once per thread: see `ScramServer::mock`).
    pub(crate) fn with_ready(
        iterations: u32,
        salt: Vec<u8>,
        stored_key: Key,
        server_key: Key,
        ready: ReadyKeys,
    ) -> Self {
        let first_tail = format!(",s={},i={iterations}", crypto::b64(&salt)).into_boxed_str();
        ScramVerifier { iterations, salt, stored_key, server_key, ready, first_tail }
    }

    /// Parses PostgreSQL's stored form.
    ///
    /// # Errors
    /// [`AuthError::Malformed`] (message [`ScramMessage::Verifier`]) naming the part that is wrong.
    pub fn parse(s: &str) -> Result<Self, AuthError> {
        let bad = |reason| AuthError::malformed(ScramMessage::Verifier, reason);
        let rest = s
            .strip_prefix(SCRAM_SHA_256)
            .and_then(|r| r.strip_prefix('$'))
            .ok_or(bad("does not start with \"SCRAM-SHA-256$\""))?;
        let (params, keys) = rest.split_once('$').ok_or(bad("missing '$' before the keys"))?;
        let (iterations, salt) = params.split_once(':').ok_or(bad("missing ':' after iterations"))?;
        let (stored_key, server_key) = keys.split_once(':').ok_or(bad("missing ':' between keys"))?;
        let iterations: u32 = iterations.parse().map_err(|_| bad("iteration count is not a number"))?;
        if iterations == 0 || iterations > crypto::MAX_ITERATIONS {
            return Err(bad("iteration count out of range"));
        }
        let salt = crypto::unb64(salt).ok_or(bad("salt is not base64"))?;
        if salt.is_empty() {
            return Err(bad("salt is empty"));
        }
        Ok(ScramVerifier::new(
            iterations,
            salt,
            crypto::unb64_key(stored_key).ok_or(bad("StoredKey is not 32 bytes of base64"))?,
            crypto::unb64_key(server_key).ok_or(bad("ServerKey is not 32 bytes of base64"))?,
        ))
    }

    /// Derives the verifier for `password` with a given salt: one PBKDF2-HMAC-SHA-256 run.
    ///
    /// The password is SASLprep-normalized as PostgreSQL does (see the module docs).
    /// Call it once per user (config load), never per login.
    pub fn derive(password: &str, salt: &[u8], iterations: u32) -> Self {
        debug_assert!(iterations > 0, "PBKDF2 needs at least one iteration");
        let salted = crypto::salted_password(&crypto::normalize(password), salt, iterations);
        Self::from_salted(&salted, salt, iterations)
    }

    /// Derives a verifier with a fresh random 16-byte salt and 4096 iterations, as PostgreSQL's
    /// `password_encryption = scram-sha-256` does. Costs one PBKDF2: call once per user at load.
    pub fn generate(password: &str) -> Self {
        let salt = crypto::random_bytes(DEFAULT_SALT_LEN);
        Self::derive(password, &salt, DEFAULT_ITERATIONS)
    }

    /// Builds the verifier from an already computed `SaltedPassword`.
    pub(crate) fn from_salted(salted: &Key, salt: &[u8], iterations: u32) -> Self {
        let stored_key = crypto::sha256(&crypto::client_key(salted));
        ScramVerifier::new(iterations, salt.to_vec(), stored_key, crypto::server_key(salted))
    }

    /// PBKDF2 iteration count.
    #[must_use]
    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    /// PBKDF2 salt.
    #[must_use]
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// `H(ClientKey)`: checks the client's proof.
    #[must_use]
    pub fn stored_key(&self) -> &Key {
        &self.stored_key
    }

    /// `HMAC(SaltedPassword, "Server Key")`: signs server-final (and checks a server's, for
    /// SCRAM pass-through).
    #[must_use]
    pub fn server_key(&self) -> &Key {
        &self.server_key
    }

    /// StoredKey and ServerKey ready to sign.
    pub(crate) fn ready(&self) -> &ReadyKeys {
        &self.ready
    }

    /// `,s=<base64 salt>,i=<iterations>`: server-first after its nonce.
    pub(crate) fn first_tail(&self) -> &str {
        &self.first_tail
    }
}

/// Whether `s` is a well-formed stored SCRAM-SHA-256 verifier (rather than a plain password).
pub fn looks_like_verifier(s: &str) -> bool {
    ScramVerifier::parse(s).is_ok()
}

impl fmt::Display for ScramVerifier {
    /// Writes PostgreSQL's stored form, which [`ScramVerifier::parse`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCRAM_SHA_256}${}:{}${}:{}",
            self.iterations,
            crypto::b64(&self.salt),
            crypto::b64(&self.stored_key),
            crypto::b64(&self.server_key)
        )
    }
}

impl fmt::Debug for ScramVerifier {
    /// Shows the parameters but not the keys: they are password equivalents for SCRAM.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .field("salt", &crypto::b64(&self.salt))
            .finish_non_exhaustive()
    }
}

impl FromStr for ScramVerifier {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The RFC 7677 example user (password "pencil") as PostgreSQL would store it.
    pub(crate) const PENCIL: &str = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$\
        WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

    #[test]
    fn derive_matches_rfc7677_and_displays_as_postgres_stores_it() {
        let salt = crypto::unb64("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let v = ScramVerifier::derive("pencil", &salt, 4096);
        assert_eq!(v.to_string(), PENCIL);
        assert_eq!(ScramVerifier::parse(PENCIL).unwrap(), v);
    }

    #[test]
    fn derive_agrees_with_postgres_protocol() {
        let theirs = postgres_protocol::password::scram_sha_256(b"s3cret pass");
        let parsed = ScramVerifier::parse(&theirs).unwrap();
        let ours = ScramVerifier::derive("s3cret pass", parsed.salt(), parsed.iterations());
        assert_eq!(ours.to_string(), theirs);
    }

    #[test]
    fn derive_normalizes_non_ascii_passwords_like_postgres() {
        // Made by PostgreSQL 15 for the password "p\u{e4}ssw\u{f6}rd\u{a0}\u{2168}" (NBSP, ROMAN NUMERAL NINE).
        let pg = "SCRAM-SHA-256$4096:GfTEUu2C8d3wjGL/8DADVg==$\
            ERZDiiD/S7/UbPhIiwR2QoRi4C2HJhEHCfxCjkU1Hzo=:jLWx3XeUPaDozH5eFylwVhl54xaJr/mDnnzI8N4KMBI=";
        let stored = ScramVerifier::parse(pg).unwrap();
        let ours = ScramVerifier::derive("p\u{e4}ssw\u{f6}rd\u{a0}\u{2168}", stored.salt(), 4096);
        assert_eq!(ours, stored);
    }

    #[test]
    fn generate_uses_a_fresh_salt_and_default_iterations() {
        let a = ScramVerifier::generate("pw");
        let b = ScramVerifier::generate("pw");
        assert_eq!(a.iterations(), DEFAULT_ITERATIONS);
        assert_eq!(a.salt().len(), DEFAULT_SALT_LEN);
        assert_ne!(a.salt(), b.salt());
        assert_eq!(ScramVerifier::parse(&a.to_string()).unwrap(), a);
    }

    #[test]
    fn parse_rejects_malformed_verifiers_with_a_reason() {
        let k = crypto::b64(&[0u8; 32]);
        let cases = [
            (String::new(), "does not start"),
            ("md53175bce1d3201d16594cebf9d7eb3f9d".to_string(), "does not start"),
            ("SCRAM-SHA-256$".to_string(), "missing '$'"),
            (format!("SCRAM-SHA-256$4096$k:{k}"), "missing ':' after"),
            (format!("SCRAM-SHA-256$4096:c2FsdA==${k}"), "missing ':' between"),
            (format!("SCRAM-SHA-256$x:c2FsdA==${k}:{k}"), "not a number"),
            (format!("SCRAM-SHA-256$0:c2FsdA==${k}:{k}"), "out of range"),
            (format!("SCRAM-SHA-256$4096:!!${k}:{k}"), "salt is not base64"),
            (format!("SCRAM-SHA-256$4096:${k}:{k}"), "salt is empty"),
            (format!("SCRAM-SHA-256$4096:c2FsdA==$AAAA:{k}"), "StoredKey"),
            (format!("SCRAM-SHA-256$4096:c2FsdA==${k}:{k}x"), "ServerKey"),
        ];
        for (input, want) in cases {
            let err = ScramVerifier::parse(&input).unwrap_err().to_string();
            assert!(err.contains(want), "{input:?}: {err}");
            assert!(!looks_like_verifier(&input));
        }
        assert!(looks_like_verifier(PENCIL));
    }

    #[test]
    fn a_verifier_is_made_ready_with_its_own_keys() {
        // Parsed, derived, or read back after a reload: what signs a login is what was stored.
        let parsed = ScramVerifier::parse(PENCIL).unwrap();
        let derived = ScramVerifier::derive("other", b"0123456789abcdef", 2);
        for v in [parsed.clone(), derived.clone(), ScramVerifier::parse(&derived.to_string()).unwrap()] {
            let message: [&[u8]; 2] = [b"n=,r=abc,r=abcdef,s=c2FsdA==,i=2,", b"c=biws,r=abcdef"];
            assert_eq!(v.ready().stored.sign(&message), crypto::hmac(v.stored_key(), &message.concat()));
            assert_eq!(v.ready().server.sign(&message), crypto::hmac(v.server_key(), &message.concat()));
            let tail = format!(",s={},i={}", crypto::b64(v.salt()), v.iterations());
            assert_eq!(v.first_tail(), tail);
        }
        assert_ne!(parsed, derived);
    }

    #[test]
    fn debug_hides_the_keys() {
        let shown = format!("{:?}", ScramVerifier::parse(PENCIL).unwrap());
        assert!(!shown.contains("WG5d8o"), "{shown}");
    }
}
