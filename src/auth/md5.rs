//! PostgreSQL's md5 password method (`AuthenticationMD5Password`).
//!
//! Stored form: `"md5" + hex(md5(password + user))`. On the wire, for a 4-byte salt:
//! `"md5" + hex(md5(hex(md5(password + user)) + salt))`.

use md5::{Digest, Md5};

use super::crypto::ct_eq;

/// The stored form of an md5 password: `"md5" + hex(md5(password + user))` (35 characters).
pub fn md5_password_hash(user: &str, password: &str) -> String {
    let mut h = Md5::new();
    h.update(password.as_bytes());
    h.update(user.as_bytes());
    format!("md5{}", hex(&h.finalize()))
}

/// The md5 response to a server's salt: `"md5" + hex(md5(hex_part + salt))`.
///
/// `stored_or_plain_hash` is the stored form (`md5` + 32 hex digits) or just the 32 hex digits;
/// a leading `md5` is removed before hashing.
pub fn md5_response(stored_or_plain_hash: &str, salt: [u8; 4]) -> String {
    let hex_part = stored_or_plain_hash.strip_prefix("md5").unwrap_or(stored_or_plain_hash);
    let mut h = Md5::new();
    h.update(hex_part.as_bytes());
    h.update(salt);
    format!("md5{}", hex(&h.finalize()))
}

/// Checks a client's md5 response (the PasswordMessage payload, with or without its trailing NUL)
/// against the stored form, in constant time.
pub fn md5_verify(expected_stored: &str, salt: [u8; 4], client_response: &[u8]) -> bool {
    let response = client_response.strip_suffix(&[0]).unwrap_or(client_response);
    let expected = md5_response(expected_stored, salt);
    ct_eq(expected.as_bytes(), response)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_hash_known_value() {
        assert_eq!(md5_password_hash("postgres", "postgres"), "md53175bce1d3201d16594cebf9d7eb3f9d");
    }

    #[test]
    fn response_known_value_with_or_without_prefix() {
        // md5("3175bce1d3201d16594cebf9d7eb3f9d" + "\x01\x02\x03\x04"), computed independently.
        let stored = "md53175bce1d3201d16594cebf9d7eb3f9d";
        let want = md5_response(stored, [1, 2, 3, 4]);
        assert_eq!(want, md5_response(&stored[3..], [1, 2, 3, 4]));
        assert_eq!(want, KNOWN_RESPONSE);
    }

    const KNOWN_RESPONSE: &str = "md568be9ed08db75f318087ab337aaea044";

    #[test]
    fn response_agrees_with_postgres_protocol() {
        let salt = [0xde, 0xad, 0xbe, 0xef];
        let theirs = postgres_protocol::authentication::md5_hash(b"alice", b"secret", salt);
        assert_eq!(md5_response(&md5_password_hash("alice", "secret"), salt), theirs);
    }

    #[test]
    fn verify_accepts_the_right_response_only() {
        let stored = md5_password_hash("alice", "secret");
        let salt = [9, 8, 7, 6];
        let good = md5_response(&stored, salt);
        assert!(md5_verify(&stored, salt, good.as_bytes()));
        assert!(md5_verify(&stored, salt, format!("{good}\0").as_bytes()));
        assert!(!md5_verify(&stored, [9, 8, 7, 5], good.as_bytes()));
        assert!(!md5_verify(&md5_password_hash("alice", "other"), salt, good.as_bytes()));
        assert!(!md5_verify(&stored, salt, b""));
    }
}
