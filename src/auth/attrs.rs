//! Reading SCRAM attribute lists (`r=...,s=...,i=...`) without panics.
//!
//! A SCRAM message is a comma-separated list of `<letter>=<value>` attributes; values never contain
//! a raw `,` (usernames escape it as `=2C`). Every reader returns an [`AuthError`] on bad input.

use super::{AuthError, ScramMessage};

/// Attributes of one message, read in order.
pub(crate) struct Attrs<'a> {
    message: ScramMessage,
    rest: std::str::Split<'a, char>,
}

impl<'a> Attrs<'a> {
    /// Starts reading `text` as the attribute list of `message`.
    pub(crate) fn new(message: ScramMessage, text: &'a str) -> Self {
        Attrs { message, rest: text.split(',') }
    }

    /// Reads the next attribute, which must be `name`; returns its value.
    pub(crate) fn expect(&mut self, name: u8, missing: &'static str) -> Result<&'a str, AuthError> {
        match self.rest.next().and_then(split_attr) {
            Some((n, value)) if n == name => Ok(value),
            _ => Err(AuthError::malformed(self.message, missing)),
        }
    }

    /// Checks that whatever is left consists of well-formed extension attributes (ignored, as
    /// PostgreSQL does).
    pub(crate) fn extensions(self) -> Result<(), AuthError> {
        let message = self.message;
        for field in self.rest {
            if split_attr(field).is_none() {
                return Err(AuthError::malformed(message, "bad attribute after the known ones"));
            }
        }
        Ok(())
    }
}

/// Splits `x=value` into (`x`, `value`) when `x` is an ASCII letter.
fn split_attr(field: &str) -> Option<(u8, &str)> {
    let bytes = field.as_bytes();
    match bytes {
        [name, b'=', ..] if name.is_ascii_alphabetic() => Some((*name, &field[2..])),
        _ => None,
    }
}

/// The message as UTF-8 text (SCRAM messages are UTF-8).
pub(crate) fn text(message: ScramMessage, bytes: &[u8]) -> Result<&str, AuthError> {
    std::str::from_utf8(bytes).map_err(|_| AuthError::malformed(message, "not valid UTF-8"))
}

/// Checks a nonce: non-empty, printable ASCII except `,` (RFC 5802 `printable`).
pub(crate) fn check_nonce(message: ScramMessage, nonce: &str) -> Result<(), AuthError> {
    let printable = |b: u8| (0x21..=0x7e).contains(&b) && b != b',';
    if nonce.is_empty() || !nonce.bytes().all(printable) {
        return Err(AuthError::malformed(message, "nonce is empty or not printable"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_attributes_in_order() {
        let mut a = Attrs::new(ScramMessage::ServerFirst, "r=abc,s=c2FsdA==,i=4096,x=ext");
        assert_eq!(a.expect(b'r', "r").unwrap(), "abc");
        assert_eq!(a.expect(b's', "s").unwrap(), "c2FsdA==");
        assert_eq!(a.expect(b'i', "i").unwrap(), "4096");
        assert!(a.extensions().is_ok());
    }

    #[test]
    fn rejects_wrong_missing_or_bad_attributes() {
        let mut a = Attrs::new(ScramMessage::ServerFirst, "s=x");
        assert!(a.expect(b'r', "r").is_err());
        let mut a = Attrs::new(ScramMessage::ServerFirst, "r=x");
        a.expect(b'r', "r").unwrap();
        assert!(a.expect(b's', "s").is_err());
        let mut a = Attrs::new(ScramMessage::ServerFirst, "r=x,bogus");
        a.expect(b'r', "r").unwrap();
        assert!(a.extensions().is_err());
        // A multi-byte first character must not be split.
        let mut a = Attrs::new(ScramMessage::ServerFirst, "é=x");
        assert!(a.expect(b'r', "r").is_err());
    }

    #[test]
    fn nonce_must_be_printable() {
        assert!(check_nonce(ScramMessage::ClientFirst, "abc%$)").is_ok());
        assert!(check_nonce(ScramMessage::ClientFirst, "").is_err());
        assert!(check_nonce(ScramMessage::ClientFirst, "a b").is_err());
        assert!(check_nonce(ScramMessage::ClientFirst, "ü").is_err());
    }
}
