//! Primitive operations of SCRAM-SHA-256 (RFC 5802 section 3), named as in the RFC.
//!
//! [`salted_password`] is the only PBKDF2 in the crate: the expensive step. Everything else is a
//! single HMAC or hash.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Length of every SCRAM-SHA-256 key, signature and proof.
pub(crate) const KEY_LEN: usize = 32;

/// Highest PBKDF2 iteration count accepted from a server (or in a stored verifier). PostgreSQL's
/// default is 4096; ten million costs seconds and stops a hostile server from stalling a pool.
pub(crate) const MAX_ITERATIONS: u32 = 10_000_000;

/// Random bytes in a nonce this crate generates (PostgreSQL uses 18 too); base64 makes 24 chars.
const NONCE_BYTES: usize = 18;

/// A SCRAM-SHA-256 key, signature or proof.
pub(crate) type Key = [u8; KEY_LEN];

/// `Hi(password, salt, i)`: PBKDF2-HMAC-SHA-256. Milliseconds at 4096 iterations; never per login
/// on the server side.
pub(crate) fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> Key {
    #[cfg(test)]
    PBKDF2_RUNS.with(|n| n.set(n.get() + 1));
    let mut out = [0u8; KEY_LEN];
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
    out
}

/// `Normalize(password)` of RFC 5802: SASLprep (RFC 4013) of the password, or its raw bytes when
/// SASLprep rejects it (prohibited or unassigned characters), exactly as PostgreSQL and libpq do.
/// Printable ASCII is returned unchanged without allocating.
pub(crate) fn normalize(password: &str) -> std::borrow::Cow<'_, [u8]> {
    match stringprep::saslprep(password) {
        Ok(std::borrow::Cow::Borrowed(s)) => std::borrow::Cow::Borrowed(s.as_bytes()),
        Ok(std::borrow::Cow::Owned(s)) => std::borrow::Cow::Owned(s.into_bytes()),
        Err(_) => std::borrow::Cow::Borrowed(password.as_bytes()),
    }
}

#[cfg(test)]
thread_local! {
    /// PBKDF2 runs on this thread, so tests can prove a login path does none.
    pub(crate) static PBKDF2_RUNS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// `HMAC(key, data)` with SHA-256.
pub(crate) fn hmac(key: &[u8], data: &[u8]) -> Key {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// An HMAC-SHA-256 key made ready once: its inner and outer padded blocks already hashed.
///
/// `HMAC(K, m) = H((K ^ opad) || H((K ^ ipad) || m))`; the two padded keys are one SHA-256
/// block each, the same for every message. [`hmac`] hashes them on every call (two of the
/// seven blocks of a login's HMAC over its AuthMessage); a key kept as an `HmacKey` hashes
/// them once and copies the two states per message.
#[derive(Clone)]
pub(crate) struct HmacKey(Hmac<Sha256>);

impl HmacKey {
    /// Hashes the padded key blocks.
    pub(crate) fn new(key: &[u8]) -> Self {
        // HMAC accepts keys of any length, so this cannot fail.
        Self(Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length"))
    }

    /// `HMAC(key, parts concatenated)`: the parts are hashed in turn, never joined.
    pub(crate) fn sign(&self, parts: &[&[u8]]) -> Key {
        let mut mac = self.0.clone();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

/// `H(data)`: SHA-256.
pub(crate) fn sha256(data: &[u8]) -> Key {
    Sha256::digest(data).into()
}

/// `ClientKey := HMAC(SaltedPassword, "Client Key")`.
pub(crate) fn client_key(salted: &Key) -> Key {
    hmac(salted, b"Client Key")
}

/// `ServerKey := HMAC(SaltedPassword, "Server Key")`.
pub(crate) fn server_key(salted: &Key) -> Key {
    hmac(salted, b"Server Key")
}

/// Byte-wise XOR of two keys (`ClientProof := ClientKey XOR ClientSignature` and back).
pub(crate) fn xor(a: &Key, b: &Key) -> Key {
    let mut out = [0u8; KEY_LEN];
    for (o, (x, y)) in out.iter_mut().zip(a.iter().zip(b.iter())) {
        *o = x ^ y;
    }
    out
}

/// Compares two byte strings in time that depends only on their lengths, not their contents.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Standard base64 with padding, as PostgreSQL writes it.
pub(crate) fn b64(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// Strict standard base64 decoding; `None` on any invalid input.
pub(crate) fn unb64(text: &str) -> Option<Vec<u8>> {
    STANDARD.decode(text).ok()
}

/// Standard base64 with padding appended to `out`.
pub(crate) fn b64_into(data: &[u8], out: &mut String) {
    STANDARD.encode_string(data, out);
}

/// Decoded bytes did not fit the buffer given.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TooLong;

/// Strict standard base64 decoded into `out` (no allocation): `None` if `text` is not base64
/// (a text too long for `out` may be reported as [`TooLong`] before its content is checked),
/// else the number of bytes written or [`TooLong`].
pub(crate) fn unb64_into(text: &str, out: &mut [u8]) -> Option<Result<usize, TooLong>> {
    match STANDARD.decode_slice(text, out) {
        Ok(n) => Some(Ok(n)),
        Err(base64::DecodeSliceError::OutputSliceTooSmall) => Some(Err(TooLong)),
        Err(base64::DecodeSliceError::DecodeError(_)) => None,
    }
}

/// Decodes base64 that must hold exactly one key.
pub(crate) fn unb64_key(text: &str) -> Option<Key> {
    // Room for more than a key, so that a longer text is not cut to one.
    let mut out = [0u8; KEY_LEN + 16];
    match unb64_into(text, &mut out)? {
        Ok(KEY_LEN) => out[..KEY_LEN].try_into().ok(),
        _ => None,
    }
}

/// `n` random bytes from the thread-local CSPRNG.
pub(crate) fn random_bytes(n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut out);
    out
}

/// A fresh printable nonce: 18 random bytes, base64 (no `,` can appear).
pub(crate) fn new_nonce() -> String {
    let mut bytes = [0u8; NONCE_BYTES];
    rand::thread_rng().fill_bytes(&mut bytes);
    b64(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ct_eq_compares_contents_and_lengths() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(ct_eq(b"", b""));
    }

    #[test]
    fn normalize_applies_saslprep_or_falls_back_to_raw_bytes() {
        assert_eq!(&*normalize("pencil"), b"pencil");
        // NFKC, non-ASCII space -> space, soft hyphen -> nothing.
        assert_eq!(&*normalize("p\u{e4}ss\u{a0}\u{2168}\u{ad}"), "p\u{e4}ss IX".as_bytes());
        // A control character is prohibited: PostgreSQL then uses the password as given.
        assert_eq!(&*normalize("a\u{7}b"), b"a\x07b");
        assert_eq!(&*normalize(""), b"");
    }

    #[test]
    fn nonce_is_24_printable_chars_without_comma() {
        let n = new_nonce();
        assert_eq!(n.len(), 24);
        assert!(n.bytes().all(|b| b.is_ascii_graphic() && b != b','));
        assert_ne!(n, new_nonce());
    }

    #[test]
    fn a_ready_key_signs_as_hmac_does() {
        for key_len in [0, 1, 32, 64, 65, 100] {
            let key: Vec<u8> = (0..key_len).map(|i| i as u8).collect();
            let ready = HmacKey::new(&key);
            for len in [0, 1, 55, 56, 63, 64, 65, 200] {
                let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
                let (a, b) = data.split_at(len / 3);
                assert_eq!(ready.sign(&[&data]), hmac(&key, &data), "key {key_len}, data {len}");
                assert_eq!(ready.sign(&[a, b, b""]), hmac(&key, &data), "in parts: key {key_len}, data {len}");
            }
        }
        // RFC 4231 test case 2.
        let mac = HmacKey::new(b"Jefe").sign(&[b"what do ya want ", b"for nothing?"]);
        let want = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        assert_eq!(mac.iter().map(|b| format!("{b:02x}")).collect::<String>(), want);
    }

    #[test]
    fn unb64_key_requires_exactly_32_bytes() {
        assert_eq!(unb64_key(&b64(&[7u8; 32])), Some([7u8; 32]));
        for len in [0, 31, 33, 48, 49, 100] {
            assert!(unb64_key(&b64(&vec![7u8; len])).is_none(), "{len} bytes");
        }
        assert!(unb64_key("not base64!").is_none());
        // Not canonical: the last character's unused bits set.
        let text = b64(&[7u8; 32]);
        assert!(unb64_key(&format!("{}B=", &text[..42])).is_none());
    }

    #[test]
    fn unb64_into_decodes_as_unb64_does() {
        let mut out = [0u8; 8];
        for text in ["", "biws", "eSws", "cD10bHMtc2VydmVyLWVuZC1wb2ludCws", "b!ws", "biw", "biws=", "AAAAAAAAAAA="] {
            let want = unb64(text);
            match unb64_into(text, &mut out) {
                Some(Ok(n)) => assert_eq!(Some(&out[..n]), want.as_deref(), "{text}"),
                Some(Err(TooLong)) => assert!(want.is_none_or(|w| w.len() > out.len()), "{text}"),
                None => assert_eq!(want, None, "{text}"),
            }
        }
    }
}
