//! The messages sluice builds itself, and decoders for the few it acts on.
//!
//! Builders append one message to a `BytesMut` (so several can be pipelined in one write);
//! decoders take a payload (after the 5-byte header) and never panic on malformed input.

use bytes::{BufMut, BytesMut};

use super::framer::{take_cstr, take_i16, take_i32};
use super::tag;

/// Append a message: tag, length placeholder, body written by `body`, length patched.
fn put_msg(buf: &mut BytesMut, t: u8, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(t);
    let at = buf.len();
    buf.put_i32(0);
    body(buf);
    let len = (buf.len() - at) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_cstr(buf: &mut BytesMut, s: &[u8]) {
    buf.put_slice(s);
    buf.put_u8(0);
}

/// Severity of an ErrorResponse sluice writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// The statement failed; the session goes on.
    Error,
    /// The session ends.
    Fatal,
}

/// ErrorResponse with severity, SQLSTATE and message.
pub fn error_response(buf: &mut BytesMut, severity: Severity, code: &str, message: &str) {
    let sev: &[u8] = match severity {
        Severity::Error => b"ERROR",
        Severity::Fatal => b"FATAL",
    };
    put_msg(buf, tag::ERROR_RESPONSE, |b| {
        for (field, value) in [(b'S', sev), (b'V', sev), (b'C', code.as_bytes()), (b'M', message.as_bytes())] {
            b.put_u8(field);
            put_cstr(b, value);
        }
        b.put_u8(0);
    });
}

/// NoticeResponse with severity WARNING, SQLSTATE and message.
pub fn warning_notice(buf: &mut BytesMut, code: &str, message: &str) {
    put_msg(buf, tag::NOTICE_RESPONSE, |b| {
        for (field, value) in
            [(b'S', &b"WARNING"[..]), (b'V', b"WARNING"), (b'C', code.as_bytes()), (b'M', message.as_bytes())]
        {
            b.put_u8(field);
            put_cstr(b, value);
        }
        b.put_u8(0);
    });
}

/// AuthenticationOk / SASL / SASLContinue / SASLFinal / MD5 / Cleartext: code plus data.
pub fn authentication(buf: &mut BytesMut, code: i32, data: &[u8]) {
    put_msg(buf, tag::AUTHENTICATION, |b| {
        b.put_i32(code);
        b.put_slice(data);
    });
}

/// Authentication request codes.
pub mod auth_code {
    /// AuthenticationOk.
    pub const OK: i32 = 0;
    /// AuthenticationCleartextPassword.
    pub const CLEARTEXT: i32 = 3;
    /// AuthenticationMD5Password.
    pub const MD5: i32 = 5;
    /// AuthenticationSASL.
    pub const SASL: i32 = 10;
    /// AuthenticationSASLContinue.
    pub const SASL_CONTINUE: i32 = 11;
    /// AuthenticationSASLFinal.
    pub const SASL_FINAL: i32 = 12;
}

/// ParameterStatus.
pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    put_msg(buf, tag::PARAMETER_STATUS, |b| {
        put_cstr(b, name.as_bytes());
        put_cstr(b, value.as_bytes());
    });
}

/// BackendKeyData.
pub fn backend_key_data(buf: &mut BytesMut, pid: i32, secret: i32) {
    put_msg(buf, tag::BACKEND_KEY_DATA, |b| {
        b.put_i32(pid);
        b.put_i32(secret);
    });
}

/// ReadyForQuery.
pub fn ready_for_query(buf: &mut BytesMut, status: super::TxStatus) {
    put_msg(buf, tag::READY_FOR_QUERY, |b| b.put_u8(status.as_byte()));
}

/// RowDescription of text columns (type `text`, text format), for result sets sluice answers
/// itself (the admin console).
pub fn row_description(buf: &mut BytesMut, columns: &[&str]) {
    put_msg(buf, tag::ROW_DESCRIPTION, |b| {
        b.put_i16(i16::try_from(columns.len()).unwrap_or(i16::MAX));
        for name in columns {
            put_cstr(b, name.as_bytes());
            b.put_i32(0); // table oid
            b.put_i16(0); // column number
            b.put_i32(25); // text
            b.put_i16(-1); // variable length
            b.put_i32(-1); // no modifier
            b.put_i16(0); // text format
        }
    });
}

/// DataRow of text values (`None`: NULL).
pub fn data_row(buf: &mut BytesMut, values: &[Option<&str>]) {
    put_msg(buf, tag::DATA_ROW, |b| {
        b.put_i16(i16::try_from(values.len()).unwrap_or(i16::MAX));
        for v in values {
            match v {
                Some(text) => {
                    b.put_i32(i32::try_from(text.len()).unwrap_or(i32::MAX));
                    b.put_slice(text.as_bytes());
                }
                None => b.put_i32(-1),
            }
        }
    });
}

/// CommandComplete with its tag (`SHOW`, `SELECT 3`...).
pub fn command_complete(buf: &mut BytesMut, command_tag: &str) {
    put_msg(buf, tag::COMMAND_COMPLETE, |b| put_cstr(b, command_tag.as_bytes()));
}

/// ParseComplete (synthesized when a statement already exists on the server connection).
pub fn parse_complete(buf: &mut BytesMut) {
    put_msg(buf, tag::PARSE_COMPLETE, |_| {});
}

/// CloseComplete (synthesized when a client closes a statement sluice keeps cached).
pub fn close_complete(buf: &mut BytesMut) {
    put_msg(buf, tag::CLOSE_COMPLETE, |_| {});
}

/// StartupMessage for protocol 3.0.
pub fn startup_message(buf: &mut BytesMut, params: &[(&str, &str)]) {
    let at = buf.len();
    buf.put_i32(0);
    buf.put_i32(super::startup::PROTOCOL_3_0);
    for (k, v) in params {
        put_cstr(buf, k.as_bytes());
        put_cstr(buf, v.as_bytes());
    }
    buf.put_u8(0);
    let len = (buf.len() - at) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// CancelRequest.
pub fn cancel_request(buf: &mut BytesMut, pid: i32, secret: i32) {
    buf.put_i32(16);
    buf.put_i32(super::startup::CANCEL_REQUEST);
    buf.put_i32(pid);
    buf.put_i32(secret);
}

/// PasswordMessage carrying a NUL-terminated password or md5 response.
pub fn password_message(buf: &mut BytesMut, password: &[u8]) {
    put_msg(buf, tag::PASSWORD, |b| put_cstr(b, password));
}

/// SASLInitialResponse.
pub fn sasl_initial_response(buf: &mut BytesMut, mechanism: &str, data: &[u8]) {
    put_msg(buf, tag::PASSWORD, |b| {
        put_cstr(b, mechanism.as_bytes());
        b.put_i32(data.len() as i32);
        b.put_slice(data);
    });
}

/// SASLResponse.
pub fn sasl_response(buf: &mut BytesMut, data: &[u8]) {
    put_msg(buf, tag::PASSWORD, |b| b.put_slice(data));
}

/// Simple Query.
pub fn query(buf: &mut BytesMut, sql: &str) {
    put_msg(buf, tag::QUERY, |b| put_cstr(b, sql.as_bytes()));
}

/// Parse with raw parameter-type bytes (`i16` count + `i32` oids) as the client sent them.
pub fn parse(buf: &mut BytesMut, name: &str, query: &[u8], param_types: &[u8]) {
    put_msg(buf, tag::PARSE, |b| {
        put_cstr(b, name.as_bytes());
        put_cstr(b, query);
        b.put_slice(param_types);
    });
}

/// Close of a prepared statement (`S`) or portal (`P`).
pub fn close(buf: &mut BytesMut, kind: u8, name: &str) {
    put_msg(buf, tag::CLOSE, |b| {
        b.put_u8(kind);
        put_cstr(b, name.as_bytes());
    });
}

/// Describe of a prepared statement (`S`) or portal (`P`).
pub fn describe(buf: &mut BytesMut, kind: u8, name: &str) {
    put_msg(buf, tag::DESCRIBE, |b| {
        b.put_u8(kind);
        put_cstr(b, name.as_bytes());
    });
}

/// Bind with the statement name replaced; `rest` is everything after the statement name.
pub fn bind_renamed(buf: &mut BytesMut, portal: &[u8], statement: &str, rest: &[u8]) {
    put_msg(buf, tag::BIND, |b| {
        put_cstr(b, portal);
        put_cstr(b, statement.as_bytes());
        b.put_slice(rest);
    });
}

/// Bind of the unnamed statement to the unnamed portal, parameters and results in text.
pub fn bind_text(buf: &mut BytesMut, params: &[&str]) {
    put_msg(buf, tag::BIND, |b| {
        put_cstr(b, b"");
        put_cstr(b, b"");
        b.put_i16(0);
        b.put_i16(params.len() as i16);
        for p in params {
            b.put_i32(p.len() as i32);
            b.put_slice(p.as_bytes());
        }
        b.put_i16(0);
    });
}

/// Sync.
pub fn sync(buf: &mut BytesMut) {
    put_msg(buf, tag::SYNC, |_| {});
}

/// Flush.
pub fn flush(buf: &mut BytesMut) {
    put_msg(buf, tag::FLUSH, |_| {});
}

/// Execute of a portal, at most `max_rows` rows (0: all).
pub fn execute(buf: &mut BytesMut, portal: &str, max_rows: i32) {
    put_msg(buf, tag::EXECUTE, |b| {
        put_cstr(b, portal.as_bytes());
        b.put_i32(max_rows);
    });
}

/// True if an ErrorResponse/NoticeResponse payload has severity FATAL or PANIC (the
/// non-localized `V` field, else `S`): the server ends the connection after it.
#[must_use]
pub fn is_fatal(mut body: &[u8]) -> bool {
    let mut severity: Option<&[u8]> = None;
    while let Some((&field, rest)) = body.split_first() {
        if field == 0 {
            break;
        }
        body = rest;
        let Some(value) = take_cstr(&mut body) else { break };
        match field {
            b'V' => return matches!(value, b"FATAL" | b"PANIC"),
            b'S' => severity = Some(value),
            _ => {}
        }
    }
    matches!(severity, Some(b"FATAL" | b"PANIC"))
}

/// Terminate.
pub fn terminate(buf: &mut BytesMut) {
    put_msg(buf, tag::TERMINATE, |_| {});
}

/// The fields of an ErrorResponse or NoticeResponse sluice cares about.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorInfo {
    /// `S`: ERROR, FATAL, PANIC...
    pub severity: String,
    /// `C`: the SQLSTATE.
    pub code: String,
    /// `M`: the primary message.
    pub message: String,
}

/// Decode an ErrorResponse payload (tolerant: missing fields stay empty).
#[must_use]
pub fn decode_error(mut body: &[u8]) -> ErrorInfo {
    let mut info = ErrorInfo::default();
    while let Some((&field, rest)) = body.split_first() {
        if field == 0 {
            break;
        }
        body = rest;
        let Some(value) = take_cstr(&mut body) else { break };
        let value = String::from_utf8_lossy(value).into_owned();
        match field {
            b'S' => info.severity = value,
            b'C' => info.code = value,
            b'M' => info.message = value,
            _ => {}
        }
    }
    info
}

/// A decoded Parse.
#[derive(Debug, PartialEq, Eq)]
pub struct ParseMsg<'a> {
    /// Statement name (empty: unnamed).
    pub name: &'a str,
    /// Query text.
    pub query: &'a [u8],
    /// Raw parameter-type section (count + oids).
    pub param_types: &'a [u8],
}

/// Decode a Parse payload.
#[must_use]
pub fn decode_parse(mut body: &[u8]) -> Option<ParseMsg<'_>> {
    let name = name_str(take_cstr(&mut body)?)?;
    let query = take_cstr(&mut body)?;
    let mut types = body;
    let n = take_i16(&mut types)?;
    if n < 0 || types.len() != n as usize * 4 {
        return None;
    }
    Some(ParseMsg { name, query, param_types: body })
}

/// The statement name of a Parse payload, without decoding the rest (the text): for a Parse
/// whose definition is already known.
#[must_use]
pub fn decode_parse_name(mut body: &[u8]) -> Option<&str> {
    name_str(take_cstr(&mut body)?)
}

/// A decoded Bind head: portal and statement names, and the bytes after them.
#[derive(Debug, PartialEq, Eq)]
pub struct BindHead<'a> {
    /// Destination portal.
    pub portal: &'a [u8],
    /// Source statement.
    pub statement: &'a str,
    /// Parameter formats, values and result formats, untouched.
    pub rest: &'a [u8],
}

/// Decode the names at the start of a Bind payload.
#[must_use]
pub fn decode_bind_head(mut body: &[u8]) -> Option<BindHead<'_>> {
    let portal = take_cstr(&mut body)?;
    let statement = name_str(take_cstr(&mut body)?)?;
    Some(BindHead { portal, statement, rest: body })
}

/// Decode a Describe or Close payload: (`S` or `P`, name).
#[must_use]
pub fn decode_target(body: &[u8]) -> Option<(u8, &str)> {
    let (&kind, mut rest) = body.split_first()?;
    let name = name_str(take_cstr(&mut rest)?)?;
    (matches!(kind, b'S' | b'P') && rest.is_empty()).then_some((kind, name))
}

/// A statement or portal name as text. The unnamed one (what drivers use for every statement
/// they do not prepare) needs no validation: no call into `from_utf8` for it.
fn name_str(bytes: &[u8]) -> Option<&str> {
    if bytes.is_empty() {
        return Some("");
    }
    std::str::from_utf8(bytes).ok()
}

/// Decode a Query payload into its text.
#[must_use]
pub fn decode_query(body: &[u8]) -> Option<&str> {
    std::str::from_utf8(query_text(body)?).ok()
}

/// A Query's text as bytes, not yet validated as UTF-8 (what [`decode_query`] validates).
#[must_use]
pub fn query_text(mut body: &[u8]) -> Option<&[u8]> {
    let text = take_cstr(&mut body)?;
    body.is_empty().then_some(text)
}

/// Decode ParameterStatus.
#[must_use]
pub fn decode_parameter_status(mut body: &[u8]) -> Option<(String, String)> {
    let k = take_cstr(&mut body)?;
    let v = take_cstr(&mut body)?;
    Some((String::from_utf8_lossy(k).into_owned(), String::from_utf8_lossy(v).into_owned()))
}

/// Decode BackendKeyData.
#[must_use]
pub fn decode_backend_key(mut body: &[u8]) -> Option<(i32, i32)> {
    Some((take_i32(&mut body)?, take_i32(&mut body)?))
}

/// Decode an Authentication request: (code, data).
#[must_use]
pub fn decode_authentication(mut body: &[u8]) -> Option<(i32, &[u8])> {
    let code = take_i32(&mut body)?;
    Some((code, body))
}

/// Decode a SASLInitialResponse: (mechanism, data).
#[must_use]
pub fn decode_sasl_initial(mut body: &[u8]) -> Option<(&[u8], &[u8])> {
    let mech = take_cstr(&mut body)?;
    let len = take_i32(&mut body)?;
    if len == -1 {
        return Some((mech, &[]));
    }
    (len >= 0 && body.len() == len as usize).then_some((mech, body))
}

/// Decode a NUL-terminated password payload.
#[must_use]
pub fn decode_password(mut body: &[u8]) -> Option<&[u8]> {
    let p = take_cstr(&mut body)?;
    body.is_empty().then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn error_round_trip() {
        let mut b = BytesMut::new();
        error_response(&mut b, Severity::Fatal, "28P01", "password authentication failed");
        assert_eq!(b[0], b'E');
        let info = decode_error(&b[5..]);
        assert_eq!(info.code, "28P01");
        assert_eq!(info.severity, "FATAL");
        assert_eq!(info.message, "password authentication failed");
    }

    #[test]
    fn parse_and_bind_round_trip() {
        let mut b = BytesMut::new();
        parse(&mut b, "s1", b"select $1", &[0, 1, 0, 0, 0, 23]);
        let p = decode_parse(&b[5..]).unwrap();
        assert_eq!((p.name, p.query), ("s1", &b"select $1"[..]));
        let mut b = BytesMut::new();
        bind_renamed(&mut b, b"", "sluice_1", &[0, 0, 0, 0, 0, 0]);
        let h = decode_bind_head(&b[5..]).unwrap();
        assert_eq!(h.statement, "sluice_1");
        assert_eq!(h.rest.len(), 6);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        #[test]
        fn decoders_never_panic(body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_error(&body);
            let _ = decode_parse(&body);
            let _ = decode_parse_name(&body);
            let _ = decode_bind_head(&body);
            let _ = decode_target(&body);
            let _ = decode_query(&body);
            let _ = decode_parameter_status(&body);
            let _ = decode_backend_key(&body);
            let _ = decode_authentication(&body);
            let _ = decode_sasl_initial(&body);
            let _ = decode_password(&body);
        }
    }
}
