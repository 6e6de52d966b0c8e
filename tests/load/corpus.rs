//! The hand-written malformed inputs: bad lengths, bad layouts, unknown versions and tags,
//! truncations, plaintext after SSLRequest, broken SCRAM, oversized messages, for each phase.

use sluice::protocol::startup::{CANCEL_REQUEST, GSSENC_REQUEST, MAX_STARTUP_PACKET, PROTOCOL_3_0, SSL_REQUEST};

use super::malformed::{Case, Phase};

/// A startup-phase packet with an explicit length field (right or wrong).
fn packet(len: i32, code: i32, body: &[u8]) -> Vec<u8> {
    [&len.to_be_bytes()[..], &code.to_be_bytes(), body].concat()
}

/// A startup-phase packet whose length field is right.
fn packet_ok(code: i32, body: &[u8]) -> Vec<u8> {
    packet(8 + body.len() as i32, code, body)
}

/// A tagged message with an explicit length field.
fn msg_len(tag: u8, len: i32, body: &[u8]) -> Vec<u8> {
    [&[tag][..], &len.to_be_bytes(), body].concat()
}

/// A tagged message whose length field is right.
fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    msg_len(tag, 4 + body.len() as i32, body)
}

/// A SASLInitialResponse with an explicit inner length.
fn sasl_initial(mechanism: &str, inner_len: i32, data: &[u8]) -> Vec<u8> {
    msg(b'p', &[mechanism.as_bytes(), b"\0", &inner_len.to_be_bytes(), data].concat())
}

const SYNC: &[u8] = &[b'S', 0, 0, 0, 4];
const TLS_CLIENT_HELLO: &[u8] = &[0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03, 0xde, 0xad];
const HTTP: &[u8] = b"GET / HTTP/1.1\r\nHost: sluice\r\n\r\n";

/// Every hand-written case.
pub fn fixed(max_message_bytes: usize) -> Vec<Case> {
    let mut cases = startup_cases();
    cases.extend(after_ssl_cases());
    cases.extend(sasl_cases());
    cases.extend(logged_in_cases(max_message_bytes));
    cases
}

fn startup_cases() -> Vec<Case> {
    use Phase::Startup as S;
    let user = b"user\0sluice_test\0\0";
    let mut cases = vec![
        Case::new("http request", S, HTTP.to_vec()),
        Case::new("TLS ClientHello without SSLRequest", S, TLS_CLIENT_HELLO.to_vec()),
        Case::new("length -1", S, packet(-1, PROTOCOL_3_0, user)),
        Case::new("length i32::MIN", S, packet(i32::MIN, PROTOCOL_3_0, user)),
        Case::new("length 2^31-1", S, packet(i32::MAX, PROTOCOL_3_0, user)),
        Case::new("length 1 MiB", S, packet(1 << 20, PROTOCOL_3_0, user)),
        Case::new("length one over the startup limit", S, packet(MAX_STARTUP_PACKET as i32 + 1, PROTOCOL_3_0, user)),
        Case::new("length shorter than the parameters", S, packet(12, PROTOCOL_3_0, user)),
        Case::new("unterminated parameter value", S, packet_ok(PROTOCOL_3_0, b"user\0sluice_test")),
        Case::new("unterminated parameter name", S, packet_ok(PROTOCOL_3_0, b"user")),
        Case::new("parameter without a value", S, packet_ok(PROTOCOL_3_0, b"user\0\0")),
        Case::new("no final terminator", S, packet_ok(PROTOCOL_3_0, b"user\0sluice_test\0")),
        Case::new("bytes after the final terminator", S, packet_ok(PROTOCOL_3_0, b"user\0sluice_test\0\0junk")),
        Case::new("empty parameter list", S, packet_ok(PROTOCOL_3_0, b"\0")),
        Case::new("no body at all", S, packet_ok(PROTOCOL_3_0, b"")),
        Case::new("no user parameter", S, packet_ok(PROTOCOL_3_0, b"database\0app\0\0")),
        Case::new("empty user name", S, packet_ok(PROTOCOL_3_0, b"user\0\0\0")),
        Case::new("non-UTF-8 user", S, packet_ok(PROTOCOL_3_0, b"user\0\xff\xfe\0\0")),
        Case::new("replication connection", S, packet_ok(PROTOCOL_3_0, b"user\0sluice_test\0replication\0true\0\0")),
        Case::new("SSLRequest with a body", S, packet_ok(SSL_REQUEST, b"body")),
        Case::new("GSSENCRequest with a body", S, packet_ok(GSSENC_REQUEST, b"body")),
        Case::new("CancelRequest too short", S, packet_ok(CANCEL_REQUEST, &[0, 0, 0, 1])),
        Case::new("CancelRequest too long", S, packet_ok(CANCEL_REQUEST, &[0; 12])),
        Case::new("CancelRequest for no session", S, packet_ok(CANCEL_REQUEST, &[0, 0, 0, 7, 1, 2, 3, 4])),
        Case::new("garbage right after a valid startup", S, [packet_ok(PROTOCOL_3_0, user), HTTP.to_vec()].concat()),
        Case::new("a startup packet of 10,001 bytes", S, packet_ok(PROTOCOL_3_0, &long_params())),
    ];
    for len in 0..8 {
        cases.push(Case::new(format!("length {len}"), S, packet(len, PROTOCOL_3_0, user)));
    }
    for (major, minor) in [(2, 0), (1, 0), (4, 0), (3, 1), (3, 0xffff), (0, 0), (0xffff, 0xffff), (1234, 5678)] {
        let code = (major << 16) | minor;
        cases.push(Case::new(format!("protocol {major}.{minor}"), S, packet_ok(code, user)));
    }
    cases.push(Case::new("half a startup, then EOF", S, packet(64, PROTOCOL_3_0, b"user\0slu")).closing());
    cases.push(Case::new("three bytes, then EOF", S, vec![0, 0, 0]).closing());
    cases
}

/// Parameters making a startup packet one byte longer than sluice (and PostgreSQL) accept.
fn long_params() -> Vec<u8> {
    let head = b"user\0sluice_test\0application_name\0";
    let fill = MAX_STARTUP_PACKET + 1 - 8 - head.len() - 2;
    [&head[..], &vec![b'x'; fill], b"\0\0"].concat()
}

fn after_ssl_cases() -> Vec<Case> {
    use Phase::AfterSsl as A;
    let user = b"user\0sluice_test\0\0";
    vec![
        Case::new("TLS ClientHello after N", A, TLS_CLIENT_HELLO.to_vec()),
        Case::new("http request after N", A, HTTP.to_vec()),
        Case::new("two more SSLRequests", A, [packet_ok(SSL_REQUEST, b""), packet_ok(SSL_REQUEST, b"")].concat()),
        Case::new("length 4 after N", A, packet(4, PROTOCOL_3_0, b"")),
        Case::new("protocol 2.0 after N", A, packet_ok(2 << 16, user)),
        Case::new("unterminated parameter after N", A, packet_ok(PROTOCOL_3_0, b"user\0x")),
        Case::new("truncated startup after N, then EOF", A, packet(100, PROTOCOL_3_0, b"user\0")).closing(),
    ]
}

fn sasl_cases() -> Vec<Case> {
    use Phase::{Sasl as P, SaslFinal as F};
    let first = b"n,,n=,r=abcdefghijklmnop";
    vec![
        Case::new("unknown SASL mechanism", P, sasl_initial("FOO-BAR", first.len() as i32, first)),
        Case::new("SCRAM-SHA-256-PLUS (not offered)", P, sasl_initial("SCRAM-SHA-256-PLUS", 24, first)),
        Case::new("client-first is garbage", P, sasl_initial("SCRAM-SHA-256", 5, b"hello")),
        Case::new("client-first asks for channel binding", P, {
            let cb = b"p=tls-server-end-point,,n=,r=abc";
            sasl_initial("SCRAM-SHA-256", cb.len() as i32, cb)
        }),
        Case::new("client-first with an authzid", P, sasl_initial("SCRAM-SHA-256", 27, b"n,a=admin,n=,r=abcdefghijkl")),
        Case::new("client-first without a nonce", P, sasl_initial("SCRAM-SHA-256", 6, b"n,,n=,")),
        Case::new("inner length -5", P, sasl_initial("SCRAM-SHA-256", -5, first)),
        Case::new("inner length past the message", P, sasl_initial("SCRAM-SHA-256", 1000, first)),
        Case::new("mechanism not terminated", P, msg(b'p', b"SCRAM-SHA-256")),
        Case::new("empty password message", P, msg(b'p', b"")),
        Case::new("password message over the auth limit", P, msg(b'p', &vec![b'a'; 20_000])),
        Case::new("password length 2^31-1", P, msg_len(b'p', i32::MAX, b"")),
        Case::new("password length 3", P, msg_len(b'p', 3, b"")),
        Case::new("a Query instead of a password", P, msg(b'Q', b"SELECT 1\0")),
        Case::new("unknown tag during auth", P, msg(b'?', b"x")),
        Case::new("Terminate during auth", P, msg(b'X', b"")),
        Case::new("truncated SASLInitialResponse, then EOF", P, msg_len(b'p', 200, b"SCRAM-SHA-256\0")).closing(),
        Case::new("client-final is garbage", F, msg(b'p', b"garbage")),
        Case::new("client-final with a foreign nonce", F, msg(b'p', b"c=biws,r=not-our-nonce,p=AAAA")),
        Case::new("client-final with channel-binding mismatch", F, msg(b'p', b"c=eSws,r=x,p=AAAA")),
        Case::new("client-final with a bad base64 proof", F, msg(b'p', b"c=biws,r=x,p=!!!")),
        Case::new("client-final without a proof", F, msg(b'p', b"c=biws,r=x")),
        Case::new("a second SASLInitialResponse", F, sasl_initial("SCRAM-SHA-256", first.len() as i32, first)),
        Case::new("empty client-final", F, msg(b'p', b"")),
        Case::new("truncated client-final, then EOF", F, msg_len(b'p', 100, b"c=biws")).closing(),
    ]
}

fn logged_in_cases(max: usize) -> Vec<Case> {
    use Phase::LoggedIn as L;
    let over = max + 1;
    let mut cases = vec![
        Case::new("Query over max_message_bytes", L, msg(b'Q', &[vec![b' '; over], b"\0".to_vec()].concat())),
        Case::new("Query header claiming max_message_bytes + 1", L, msg_len(b'Q', over as i32, b"SELECT")),
        Case::new("Query length 2^30", L, msg_len(b'Q', 1 << 30, b"SELECT")),
        Case::new("Query length -1", L, msg_len(b'Q', -1, b"")),
        Case::new("Query length 0", L, msg_len(b'Q', 0, b"")),
        Case::new("Query length 3", L, msg_len(b'Q', 3, b"")),
        Case::new("Query without its NUL", L, msg(b'Q', b"SELECT 1")),
        Case::new("Query with bytes after the NUL", L, msg(b'Q', b"SELECT 1\0junk")),
        Case::new("Query not UTF-8", L, msg(b'Q', b"SELECT '\xff\xfe'\0")),
        Case::new("Parse with a negative type count", L, [msg(b'P', b"\0SELECT 1\0\xff\xff"), SYNC.to_vec()].concat()),
        Case::new("Parse with too few type oids", L, [msg(b'P', b"\0SELECT $1\0\0\x03\0\0"), SYNC.to_vec()].concat()),
        Case::new("Parse with an unterminated name", L, [msg(b'P', b"stmt"), SYNC.to_vec()].concat()),
        Case::new(
            "Bind of a statement that does not exist",
            L,
            [msg(b'B', b"\0nosuch\0\0\0\0\0\0\0"), SYNC.to_vec()].concat(),
        ),
        Case::new("Bind that is garbage", L, [msg(b'B', b"\xff\xff\xff"), SYNC.to_vec()].concat()),
        Case::new("Describe of kind X", L, [msg(b'D', b"Xname\0"), SYNC.to_vec()].concat()),
        Case::new(
            "Execute of a portal that does not exist",
            L,
            [msg(b'E', b"nosuch\0\0\0\0\0"), SYNC.to_vec()].concat(),
        ),
        Case::new("Close of kind Z", L, [msg(b'C', b"Zname\0"), SYNC.to_vec()].concat()),
        Case::new("FunctionCall that is garbage", L, msg(b'F', b"\0\0")),
        Case::new("CopyData outside COPY, then an unknown tag", L, [msg(b'd', b"data"), msg(b'?', b"")].concat()),
        Case::new("Terminate with a body", L, msg(b'X', b"bye")),
        Case::new("a second StartupMessage", L, packet_ok(PROTOCOL_3_0, b"user\0sluice_test\0\0")),
        Case::new("an SSLRequest after login", L, packet_ok(SSL_REQUEST, b"")),
        Case::new("http request after login", L, HTTP.to_vec()),
        Case::new("truncated Query, then EOF", L, msg_len(b'Q', 100, b"SELECT")).closing(),
        Case::new("truncated Parse, then EOF", L, msg_len(b'P', 50, b"s\0SELECT")).closing(),
        Case::new("half a header, then EOF", L, vec![b'Q', 0, 0]).closing(),
    ];
    for tag in [b'?', b'!', b'z', b'p', b'R', b'K', b'A', b'Z', 0x00, 0x7f, 0xff] {
        cases.push(Case::new(format!("unknown tag 0x{tag:02x} after login"), L, msg(tag, b"x\0")));
    }
    cases
}
