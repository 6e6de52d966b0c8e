//! The server side of SCRAM-SHA-256: what sluice runs against its clients.
//!
//! Per login this costs a handful of HMAC/SHA-256 operations: it reads StoredKey and ServerKey from
//! the [`ScramVerifier`] and never computes PBKDF2 (this file imports no such function).
//!
//! Exchange (RFC 5802 section 5, payloads of the caller's SASL messages):
//! `client_first(client-first) -> server-first`, `client_final(client-final) -> server-final`.
//!
//! Channel binding (SCRAM-SHA-256-PLUS, `tls-server-end-point` of RFC 5929) follows PostgreSQL:
//! on TLS the `-PLUS` mechanism is offered; a client that chose it must bind (`p=`), one that did
//! not must not (`p=` with plain SCRAM-SHA-256, or `y` while sluice offered -PLUS, is refused:
//! a downgrade), and `c=` must carry the GS2 header followed by the hash of sluice's certificate.
//!
//! After a successful exchange the ClientKey recovered from the proof is available
//! ([`ScramServer::client_key`]): with auth_query it lets sluice log in to the servers as the
//! client, without a password.

use std::sync::Arc;

use super::attrs::{self, Attrs};
use super::crypto::{self, ct_eq, hmac, sha256, xor, Key};
use super::verifier::ReadyKeys;
use super::{AuthError, ScramMessage, ScramVerifier};

/// Where a server-side exchange stands.
enum State {
    /// Waiting for client-first-message.
    Start,
    /// server-first was sent; waiting for client-final-message.
    SentFirst(Exchanged),
    /// The exchange ended (successfully or not); no further step is allowed.
    Finished,
}

/// What the final step needs from the first, in one text: the GS2 header the client sent
/// (`n,,`, `y,,` or `p=tls-server-end-point,,`, echoed base64 in `c=`), then the first two parts
/// of AuthMessage with their commas: client-first-message-bare `,` server-first-message `,`.
/// server-first begins with `r=` and the nonce (the client's, then sluice's) that client-final
/// must repeat. One allocation where five strings were made and joined.
struct Exchanged {
    text: String,
    /// Where client-first-message-bare begins (the GS2 header's length).
    bare_at: usize,
    /// Where server-first-message begins.
    first_at: usize,
    /// The nonce's length.
    nonce_len: usize,
}

impl Exchanged {
    fn new(gs2_header: &str, bare: &str, client_nonce: &str, server_nonce: &str, tail: &str) -> Self {
        let nonce_len = client_nonce.len() + server_nonce.len();
        let mut text = String::with_capacity(gs2_header.len() + bare.len() + nonce_len + tail.len() + 4);
        for part in [gs2_header, bare, ",r=", client_nonce, server_nonce, tail, ","] {
            text.push_str(part);
        }
        let bare_at = gs2_header.len();
        Self { text, bare_at, first_at: bare_at + bare.len() + 1, nonce_len }
    }

    fn gs2_header(&self) -> &str {
        &self.text[..self.bare_at]
    }

    /// client-first-message-bare `,` server-first-message `,`: AuthMessage before
    /// client-final-message-without-proof.
    fn auth_message_head(&self) -> &str {
        &self.text[self.bare_at..]
    }

    fn server_first(&self) -> &str {
        &self.text[self.first_at..self.text.len() - 1]
    }

    fn nonce(&self) -> &str {
        &self.text[self.first_at + 2..self.first_at + 2 + self.nonce_len]
    }
}

/// The longest channel binding `c=` can carry: the longest GS2 header sluice accepts with
/// binding (`p=tls-server-end-point,,`, 24 bytes) and a certificate hash of up to SHA-512's 64;
/// a longer one cannot match.
const MAX_BINDING: usize = 96;

/// What the transport offers for channel binding, and which mechanism the client chose.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChannelBinding {
    /// `tls-server-end-point` data when the client is on TLS (sluice then offers -PLUS).
    pub end_point: Option<Arc<[u8]>>,
    /// The client selected `SCRAM-SHA-256-PLUS`.
    pub plus: bool,
}

/// One server-side SCRAM-SHA-256 exchange with one client.
pub struct ScramServer {
    verifier: Arc<ScramVerifier>,
    /// True for an unknown user: the exchange runs to the end and then fails.
    mock: bool,
    server_nonce: String,
    state: State,
    binding: ChannelBinding,
    /// The ClientKey the client proved it has (set by a successful `client_final`).
    client_key: Option<Key>,
}

impl ScramServer {
    /// Starts an exchange that checks the client's password against `verifier` (shared: its
    /// keys were made ready to sign when it was made).
    pub fn new(verifier: &Arc<ScramVerifier>) -> Self {
        Self::build(Arc::clone(verifier), false, crypto::new_nonce())
    }

    /// Starts an exchange for a user that does not exist: it behaves like a real one (a salt, 4096
    /// iterations, a server-first message) and ends in [`AuthError::WrongPassword`], so the client
    /// cannot tell an unknown user from a wrong password.
    ///
    /// The salt is random per call; a client probing the same name twice sees two salts. Logins
    /// use [`ScramServer::mock_for`], a stable salt per name, as PostgreSQL does.
    pub fn mock() -> Self {
        let salt = crypto::random_bytes(super::verifier::DEFAULT_SALT_LEN);
        Self::mock_with_salt(salt)
    }

    /// Like [`ScramServer::mock`], but the salt is derived from `user` and a process secret
    /// `mock_key` (random, created once at startup): repeated probes of one unknown name see the
    /// same salt, exactly like a real user, and names cannot be told apart across processes.
    pub fn mock_for_user(user: &str, mock_key: &[u8; 32]) -> Self {
        let digest = hmac(mock_key, user.as_bytes());
        Self::mock_with_salt(digest[..super::verifier::DEFAULT_SALT_LEN].to_vec())
    }

    /// [`ScramServer::mock_for_user`] with this process's secret, drawn at its first use. A real
    /// user shows the same salt at every login: with a salt drawn per probe, probing a name
    /// twice told whether it exists.
    pub fn mock_for(user: &str) -> Self {
        static MOCK_KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
        let key = MOCK_KEY.get_or_init(|| {
            let mut key = [0u8; 32];
            key.copy_from_slice(&crypto::random_bytes(32));
            key
        });
        Self::mock_for_user(user, key)
    }

    /// The mock's keys are random and drawn once per thread, made ready to sign as a real
    /// verifier's are: the exchange then does the same hashing as a real one at every step
    /// (making them per mock would cost it four SHA-256 blocks a real login no longer spends).
    /// They sign nothing a client sees (a mock exchange fails before server-final) and cannot
    /// match a proof (it is refused whatever the proof).
    fn mock_with_salt(salt: Vec<u8>) -> Self {
        thread_local! {
            static MOCK_KEYS: (Key, Key, ReadyKeys) = {
                let (stored, server) = (random_key(), random_key());
                (stored, server, ReadyKeys::new(&stored, &server))
            };
        }
        let verifier = MOCK_KEYS.with(|(stored, server, ready)| {
            ScramVerifier::with_ready(super::verifier::DEFAULT_ITERATIONS, salt, *stored, *server, ready.clone())
        });
        Self::build(Arc::new(verifier), true, crypto::new_nonce())
    }

    /// A server with a fixed nonce, for known-answer tests only.
    #[cfg(test)]
    pub(crate) fn with_nonce(verifier: &ScramVerifier, server_nonce: &str) -> Self {
        Self::build(Arc::new(verifier.clone()), false, server_nonce.to_string())
    }

    fn build(verifier: Arc<ScramVerifier>, mock: bool, server_nonce: String) -> Self {
        ScramServer {
            verifier,
            mock,
            server_nonce,
            state: State::Start,
            binding: ChannelBinding::default(),
            client_key: None,
        }
    }

    /// Use channel binding as the transport allows and the client chose.
    #[must_use]
    pub fn with_binding(mut self, binding: ChannelBinding) -> Self {
        self.binding = binding;
        self
    }

    /// The ClientKey recovered from a successful exchange's proof: a password equivalent for
    /// this verifier's salt and iterations, held only in memory.
    #[must_use]
    pub fn client_key(&self) -> Option<[u8; 32]> {
        self.client_key
    }

    /// Reads client-first-message and returns server-first-message (`r=...,s=...,i=...`).
    ///
    /// Accepts GS2 flags `n` and `y` (sluice offers no `-PLUS` mechanism, so `y` is no downgrade);
    /// the username in `n=` is ignored, as PostgreSQL does (the startup message named the user).
    ///
    /// # Errors
    /// [`AuthError::Malformed`], [`AuthError::ChannelBindingUnsupported`] for `p=...`,
    /// [`AuthError::Unsupported`] for an authzid or a mandatory extension,
    /// [`AuthError::OutOfOrder`] if called twice. Any error ends the exchange.
    pub fn client_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, AuthError> {
        if !matches!(self.state, State::Start) {
            return Err(self.fail(AuthError::OutOfOrder("client-first after the first step")));
        }
        self.state = State::Finished;
        let (gs2_header, client_first_bare, client_nonce) = parse_client_first(msg)?;
        self.check_binding(gs2_header)?;
        let ex =
            Exchanged::new(gs2_header, client_first_bare, client_nonce, &self.server_nonce, self.verifier.first_tail());
        let reply = ex.server_first().as_bytes().to_vec();
        self.state = State::SentFirst(ex);
        Ok(reply)
    }

    /// The GS2 flag against the mechanism and transport. When it passes, `c=` must carry the
    /// binding data [`ScramServer::binding_data`] returns.
    fn check_binding(&self, gs2_header: &str) -> Result<(), AuthError> {
        let flag = gs2_header.split(',').next().unwrap_or_default();
        let offered = self.binding.end_point.as_ref();
        let cb_type = flag.strip_prefix("p=");
        match (cb_type, flag, self.binding.plus, offered) {
            (None, "n", false, _) | (None, "y", false, None) | (Some("tls-server-end-point"), _, true, Some(_)) => {
                Ok(())
            }
            (None, _, false, Some(_)) => Err(AuthError::ChannelBindingNegotiation(
                "client supports channel binding but did not use it although SCRAM-SHA-256-PLUS was offered",
            )),
            (Some(t), _, false, None) | (Some(t), _, true, Some(_)) => {
                Err(AuthError::ChannelBindingUnsupported(t.into()))
            }
            (Some(_), _, false, Some(_)) => Err(AuthError::ChannelBindingNegotiation(
                "client requested channel binding with SCRAM-SHA-256, which has none",
            )),
            (None, _, true, _) => Err(AuthError::ChannelBindingNegotiation(
                "client selected SCRAM-SHA-256-PLUS but sent no channel binding",
            )),
            (_, _, true, None) => {
                Err(AuthError::ChannelBindingNegotiation("client selected SCRAM-SHA-256-PLUS, which was not offered"))
            }
            (None, _, false, None) => Err(AuthError::malformed(ScramMessage::ClientFirst, "bad GS2 flag")),
        }
    }

    /// The channel binding data `c=` carries after the GS2 header: the certificate's hash with
    /// -PLUS (which [`ScramServer::check_binding`] let through only with binding offered and
    /// `p=tls-server-end-point`), none without.
    fn binding_data(&self) -> &[u8] {
        match (&self.binding.end_point, self.binding.plus) {
            (Some(data), true) => data,
            _ => &[],
        }
    }

    /// Reads client-final-message, checks the proof, and returns server-final-message (`v=...`).
    ///
    /// # Errors
    /// [`AuthError::WrongPassword`] if the proof does not match (always, for a mock exchange);
    /// [`AuthError::Malformed`], [`AuthError::ChannelBindingMismatch`], [`AuthError::NonceMismatch`]
    /// for a bad message; [`AuthError::OutOfOrder`] if not preceded by `client_first`.
    pub fn client_final(&mut self, msg: &[u8]) -> Result<Vec<u8>, AuthError> {
        let ex = match std::mem::replace(&mut self.state, State::Finished) {
            State::SentFirst(ex) => ex,
            _ => return Err(AuthError::OutOfOrder("client-final without a client-first")),
        };
        let fin = parse_client_final(msg)?;
        let (gs2_header, data) = (ex.gs2_header().as_bytes(), self.binding_data());
        let not_base64 = || AuthError::malformed(ScramMessage::ClientFinal, "c= is not base64");
        let mut binding = [0u8; MAX_BINDING];
        let binding = match crypto::unb64_into(fin.channel_binding, &mut binding) {
            Some(Ok(n)) => &binding[..n],
            Some(Err(crypto::TooLong)) if crypto::unb64(fin.channel_binding).is_some() => {
                return Err(AuthError::ChannelBindingMismatch)
            }
            _ => return Err(not_base64()),
        };
        if binding.len() != gs2_header.len() + data.len()
            || !binding.starts_with(gs2_header)
            || !ct_eq(&binding[gs2_header.len()..], data)
        {
            return Err(AuthError::ChannelBindingMismatch);
        }
        if !ct_eq(fin.nonce.as_bytes(), ex.nonce().as_bytes()) {
            return Err(AuthError::NonceMismatch);
        }
        // AuthMessage, hashed in its two parts rather than joined.
        let auth_message = [ex.auth_message_head().as_bytes(), fin.without_proof.as_bytes()];
        let Some(client_key) = self.proof_matches(&auth_message, &fin.proof) else {
            return Err(AuthError::WrongPassword);
        };
        self.client_key = Some(client_key);
        let signature = self.verifier.ready().server.sign(&auth_message);
        let mut reply = String::with_capacity(46);
        reply.push_str("v=");
        crypto::b64_into(&signature, &mut reply);
        Ok(reply.into_bytes())
    }

    /// `H(ClientProof XOR HMAC(StoredKey, AuthMessage)) == StoredKey`, in constant time.
    /// Returns the ClientKey when it matches.
    fn proof_matches(&self, auth_message: &[&[u8]], proof: &Key) -> Option<Key> {
        let client_signature = self.verifier.ready().stored.sign(auth_message);
        let client_key = xor(proof, &client_signature);
        let matches = ct_eq(&sha256(&client_key), self.verifier.stored_key());
        (matches && !self.mock).then_some(client_key)
    }

    fn fail(&mut self, err: AuthError) -> AuthError {
        self.state = State::Finished;
        err
    }
}

impl std::fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramServer").field("mock", &self.mock).finish_non_exhaustive()
    }
}

fn random_key() -> Key {
    let mut key = [0u8; crypto::KEY_LEN];
    key.copy_from_slice(&crypto::random_bytes(crypto::KEY_LEN));
    key
}

/// Splits client-first into (GS2 header, client-first-message-bare, client nonce).
fn parse_client_first(msg: &[u8]) -> Result<(&str, &str, &str), AuthError> {
    const M: ScramMessage = ScramMessage::ClientFirst;
    let text = attrs::text(M, msg)?;
    let (flag, rest) = text.split_once(',').ok_or(AuthError::malformed(M, "no GS2 header"))?;
    match flag {
        "n" | "y" => {}
        _ if flag.starts_with("p=") && flag.len() > 2 => {}
        _ => return Err(AuthError::malformed(M, "GS2 channel-binding flag is not n, y or p=")),
    }
    let (authzid, bare) = rest.split_once(',').ok_or(AuthError::malformed(M, "GS2 header is not closed"))?;
    if !authzid.is_empty() {
        return Err(AuthError::Unsupported("authorization identity (a=) in client-first"));
    }
    let gs2_header = &text[..flag.len() + authzid.len() + 2];
    if bare.starts_with("m=") {
        return Err(AuthError::Unsupported("mandatory extension (m=) in client-first"));
    }
    let mut a = Attrs::new(M, bare);
    a.expect(b'n', "missing n= (username)")?;
    let nonce = a.expect(b'r', "missing r= (nonce) after n=")?;
    attrs::check_nonce(M, nonce)?;
    a.extensions()?;
    Ok((gs2_header, bare, nonce))
}

/// The parts of client-final-message.
struct ClientFinal<'a> {
    /// The `c=` value (base64 of the GS2 header).
    channel_binding: &'a str,
    /// The `r=` value.
    nonce: &'a str,
    /// client-final-message-without-proof, part of AuthMessage.
    without_proof: &'a str,
    /// The decoded `p=` value.
    proof: Key,
}

fn parse_client_final(msg: &[u8]) -> Result<ClientFinal<'_>, AuthError> {
    const M: ScramMessage = ScramMessage::ClientFinal;
    let text = attrs::text(M, msg)?;
    let (without_proof, proof) = text.rsplit_once(',').ok_or(AuthError::malformed(M, "no p= (proof) at the end"))?;
    let proof = proof.strip_prefix("p=").ok_or(AuthError::malformed(M, "last attribute is not p= (proof)"))?;
    let proof = crypto::unb64_key(proof).ok_or(AuthError::malformed(M, "proof is not 32 bytes of base64"))?;
    let mut a = Attrs::new(M, without_proof);
    let channel_binding = a.expect(b'c', "missing c= (channel binding)")?;
    let nonce = a.expect(b'r', "missing r= (nonce) after c=")?;
    a.extensions()?;
    Ok(ClientFinal { channel_binding, nonce, without_proof, proof })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pencil() -> ScramVerifier {
        let salt = crypto::unb64("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        ScramVerifier::from_salted(&crypto::salted_password(b"pencil", &salt, 4096), &salt, 4096)
    }

    const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const NONCE: &str = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";

    #[test]
    fn rfc7677_exchange_from_the_server_side() {
        let mut s = ScramServer::with_nonce(&pencil(), SERVER_NONCE);
        let first = s.client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        assert_eq!(first, format!("r={NONCE},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096").as_bytes());
        let fin = format!("c=biws,r={NONCE},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        let last = s.client_final(fin.as_bytes()).unwrap();
        assert_eq!(last, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
        assert_eq!(s.client_final(fin.as_bytes()), Err(AuthError::OutOfOrder("client-final without a client-first")));
    }

    #[test]
    fn wrong_proof_is_wrong_password() {
        let mut s = ScramServer::with_nonce(&pencil(), SERVER_NONCE);
        s.client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        let fin = format!("c=biws,r={NONCE},p={}", crypto::b64(&[9u8; 32]));
        assert_eq!(s.client_final(fin.as_bytes()), Err(AuthError::WrongPassword));
    }

    #[test]
    fn client_first_errors_name_the_problem() {
        let cases: [(&[u8], AuthError); 8] = [
            (b"p=tls-server-end-point,,n=,r=abc", AuthError::ChannelBindingUnsupported("tls-server-end-point".into())),
            (b"n,a=admin,n=,r=abc", AuthError::Unsupported("authorization identity (a=) in client-first")),
            (b"n,,m=ext,n=,r=abc", AuthError::Unsupported("mandatory extension (m=) in client-first")),
            (
                b"x,,n=,r=abc",
                AuthError::malformed(ScramMessage::ClientFirst, "GS2 channel-binding flag is not n, y or p="),
            ),
            (b"n,,n=,r=", AuthError::malformed(ScramMessage::ClientFirst, "nonce is empty or not printable")),
            (b"n,,r=abc", AuthError::malformed(ScramMessage::ClientFirst, "missing n= (username)")),
            (b"n", AuthError::malformed(ScramMessage::ClientFirst, "no GS2 header")),
            (b"n,,n=,r=a\xff", AuthError::malformed(ScramMessage::ClientFirst, "not valid UTF-8")),
        ];
        for (msg, want) in cases {
            let mut s = ScramServer::new(&Arc::new(pencil()));
            assert_eq!(s.client_first(msg), Err(want), "{}", String::from_utf8_lossy(msg));
            assert!(matches!(s.client_first(b"n,,n=,r=abc"), Err(AuthError::OutOfOrder(_))));
        }
    }

    #[test]
    fn client_final_checks_binding_nonce_and_layout() {
        let proof = crypto::b64(&[0u8; 32]);
        let cases = [
            (format!("c=eSws,r={NONCE},p={proof}"), AuthError::ChannelBindingMismatch),
            (format!("c=biws,r={NONCE}x,p={proof}"), AuthError::NonceMismatch),
            (
                format!("c=biws,r={NONCE}"),
                AuthError::malformed(ScramMessage::ClientFinal, "last attribute is not p= (proof)"),
            ),
            (
                format!("r={NONCE},p={proof}"),
                AuthError::malformed(ScramMessage::ClientFinal, "missing c= (channel binding)"),
            ),
            (
                format!("c=biws,r={NONCE},p=AAAA"),
                AuthError::malformed(ScramMessage::ClientFinal, "proof is not 32 bytes of base64"),
            ),
            (
                format!("c=b!ws,r={NONCE},p={proof}"),
                AuthError::malformed(ScramMessage::ClientFinal, "c= is not base64"),
            ),
        ];
        for (msg, want) in cases {
            let mut s = ScramServer::with_nonce(&pencil(), SERVER_NONCE);
            s.client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
            assert_eq!(s.client_final(msg.as_bytes()), Err(want), "{msg}");
        }
    }

    #[test]
    fn mock_for_user_gives_a_stable_salt_per_name() {
        let key = [3u8; 32];
        let salt = |user: &str| {
            let mut s = ScramServer::mock_for_user(user, &key);
            String::from_utf8(s.client_first(b"n,,n=,r=abc").unwrap()).unwrap()
        };
        let (a, b, c) = (salt("ghost"), salt("ghost"), salt("other"));
        let salt_of = |m: &str| m.split(',').nth(1).unwrap().to_string();
        assert_eq!(salt_of(&a), salt_of(&b));
        assert_ne!(salt_of(&a), salt_of(&c));
        assert!(a.ends_with(",i=4096"));
    }
}
