//! The fuzz targets. Each takes one generated input, feeds it to sluice's code, and reports a
//! panic or a broken invariant together with the input in hex.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use bytes::BytesMut;
use rand::rngs::StdRng;
use rand::Rng;
use sluice::auth::{SaltCache, ScramClient, ScramServer, ScramVerifier};
use sluice::protocol::framer::{complete_prefix, split_frame};
use sluice::protocol::messages as m;
use sluice::protocol::startup::{self, StartupPacket};
use sluice::protocol::{FrameReader, TxStatus};

use super::mutate;

/// What is fuzzed.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// `protocol::startup::parse` and `read_packet`.
    Startup,
    /// `protocol::framer::split_frame`, `complete_prefix`, `FrameReader`, and the decoders on
    /// each frame found.
    Framer,
    /// Every decoder in `protocol::messages`, on message bodies.
    Decoders,
    /// `auth::ScramServer` (client-first, client-final) and `ScramVerifier::parse`.
    Scram,
}

/// The password of the fuzzed SCRAM user.
const PASSWORD: &str = "fuzz-password";
/// Every how many inputs the async readers run too (they cost a runtime round trip).
const ASYNC_EVERY: u64 = 8;
/// Message size limits the framer is run with.
const MAX_SIZES: &[usize] = &[5, 6, 64, 1024, 1 << 20];

/// Everything built once per target run.
pub struct State {
    rt: tokio::runtime::Runtime,
    startup_seeds: Vec<Vec<u8>>,
    stream_seeds: Vec<Vec<u8>>,
    body_seeds: Vec<Vec<u8>>,
    verifier: std::sync::Arc<ScramVerifier>,
    salts: SaltCache,
    n: u64,
    /// How deep the inputs got, for the report.
    pub depth: Depth,
}

/// How many inputs got past the first checks: a fuzz run whose inputs all die at the first
/// length check proves little.
#[derive(Clone, Copy, Debug, Default)]
pub struct Depth {
    /// Startup packets parsed successfully.
    pub startup_parsed: u64,
    /// Frames split off by the framer.
    pub frames: u64,
    /// Bodies some decoder accepted.
    pub decoded: u64,
    /// SCRAM exchanges whose client-first was accepted.
    pub scram_first_accepted: u64,
    /// SCRAM exchanges that ended in success.
    pub scram_succeeded: u64,
}

impl State {
    /// Seeds, a runtime for the async readers, and one SCRAM verifier (one PBKDF2).
    pub fn new() -> State {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime");
        let messages = seed_messages();
        let body_seeds = messages.iter().map(|msg| msg[5..].to_vec()).collect();
        let mut stream_seeds: Vec<Vec<u8>> = messages.chunks(3).map(|c| c.concat()).collect();
        stream_seeds.extend(messages);
        State {
            rt,
            startup_seeds: startup_seeds(),
            stream_seeds,
            body_seeds,
            verifier: std::sync::Arc::new(ScramVerifier::derive(PASSWORD, b"fuzz-salt-16byte", 4096)),
            salts: SaltCache::new(),
            n: 0,
            depth: Depth::default(),
        }
    }
}

impl Target {
    /// Every target, in the order they run.
    pub const ALL: [Target; 4] = [Target::Startup, Target::Framer, Target::Decoders, Target::Scram];

    /// Generate one input and run it.
    ///
    /// # Errors
    /// A panic or a broken invariant, with the input.
    pub fn run_one(self, rng: &mut StdRng, st: &mut State) -> Result<(), String> {
        st.n += 1;
        let with_async = st.n.is_multiple_of(ASYNC_EVERY);
        match self {
            Target::Startup => {
                let mut input = mutate::input(rng, &st.startup_seeds);
                // Half the time, a length field that matches: the layout behind it gets fuzzed.
                if input.len() >= 4 && rng.gen_bool(0.5) {
                    let len = input.len() as i32;
                    input[..4].copy_from_slice(&len.to_be_bytes());
                }
                st.depth.startup_parsed += u64::from(startup::parse(&input).is_ok());
                guarded(&input, |b| startup_target(b, with_async.then_some(&st.rt)))
            }
            Target::Framer => {
                let input = mutate::input(rng, &st.stream_seeds);
                let max = MAX_SIZES[rng.gen_range(0..MAX_SIZES.len())];
                let frames = &mut st.depth.frames;
                guarded(&input, |b| framer_target(b, max, with_async.then_some(&st.rt), frames))
            }
            Target::Decoders => {
                let input = mutate::input(rng, &st.body_seeds);
                st.depth.decoded += u64::from(any_decoder_accepts(&input));
                guarded(&input, decoders_target)
            }
            Target::Scram => scram_target(rng, st),
        }
    }
}

/// Run `f` on `input`, turning a panic or an invariant failure into a report.
fn guarded(input: &[u8], f: impl FnOnce(&[u8]) -> Result<(), String>) -> Result<(), String> {
    match catch_unwind(AssertUnwindSafe(|| f(input))) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(broken)) => Err(format!("invariant broken: {broken}\ninput: {}", hex(input))),
        Err(panic) => Err(format!("panicked: {}\ninput: {}", panic_text(&panic), hex(input))),
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn startup_target(b: &[u8], rt: Option<&tokio::runtime::Runtime>) -> Result<(), String> {
    let parsed = startup::parse(b);
    if let Ok(StartupPacket::Startup { params }) = &parsed {
        let declared = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        if declared as usize != b.len() {
            return Err(format!("accepted a packet declaring {declared} bytes in {}", b.len()));
        }
        if params.is_empty() || params.iter().any(|(k, v)| k.contains('\0') || v.contains('\0')) {
            return Err(format!("bad parameters accepted: {params:?}"));
        }
    }
    let Some(rt) = rt else { return Ok(()) };
    // In memory the reader never waits: it must finish with a packet or an error.
    let read = rt.block_on(startup::read_packet(
        &mut &b[..],
        &mut BytesMut::new(),
        tokio::time::Instant::now() + Duration::from_secs(5),
    ));
    match read {
        Ok(p) => {
            let len = i32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
            let again = startup::parse(&b[..len]);
            (again.as_ref() == Ok(&p)).then_some(()).ok_or_else(|| format!("read_packet {p:?} but parse {again:?}"))
        }
        Err(startup::StartupError::Timeout) => Err("read_packet waited on an in-memory reader".into()),
        Err(_) => Ok(()),
    }
}

fn framer_target(b: &[u8], max: usize, rt: Option<&tokio::runtime::Runtime>, frames: &mut u64) -> Result<(), String> {
    let mut buf = BytesMut::from(b);
    let mut consumed = 0;
    while let Ok(Some(frame)) = split_frame(&mut buf, max) {
        *frames += 1;
        let bytes = frame.bytes();
        if bytes.len() < 5 {
            return Err(format!("a frame of {} bytes", bytes.len()));
        }
        let declared = i32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        if bytes.len() > max || declared as usize + 1 != bytes.len() {
            return Err(format!("frame of {} bytes declaring {declared} (max {max})", bytes.len()));
        }
        if bytes[..] != b[consumed..consumed + bytes.len()] {
            return Err(format!("frame at {consumed} is not the input's bytes"));
        }
        consumed += bytes.len();
        decoders_target(frame.body())?;
    }
    if buf[..] != b[consumed..] {
        return Err(format!("after {consumed} bytes of frames the rest is not the input's rest"));
    }
    if let Ok((prefix, _)) = complete_prefix(b, max, |tag, _| tag == b'Z') {
        if prefix > b.len() {
            return Err(format!("complete prefix {prefix} longer than the input {}", b.len()));
        }
    }
    let Some(rt) = rt else { return Ok(()) };
    rt.block_on(async {
        let mut reader = FrameReader::new(b, max);
        let mut read = 0;
        // Each frame is at least 5 bytes: the loop ends long before this bound.
        for _ in 0..=b.len() {
            match reader.next().await {
                Ok(Some(f)) if b[read..].starts_with(f.bytes()) => read += f.bytes().len(),
                Ok(Some(_)) => return Err(format!("FrameReader frame at {read} is not the input's bytes")),
                Ok(None) | Err(_) => return Ok(()),
            }
        }
        Err("FrameReader kept returning frames".into())
    })
}

fn any_decoder_accepts(body: &[u8]) -> bool {
    m::decode_parse(body).is_some()
        || m::decode_bind_head(body).is_some()
        || m::decode_target(body).is_some()
        || m::decode_query(body).is_some()
        || m::decode_sasl_initial(body).is_some()
        || m::decode_password(body).is_some()
}

fn decoders_target(body: &[u8]) -> Result<(), String> {
    let _ = m::decode_error(body);
    let _ = m::decode_bind_head(body);
    let _ = m::decode_target(body);
    let _ = m::decode_parameter_status(body);
    let _ = m::decode_backend_key(body);
    let _ = m::decode_authentication(body);
    let _ = m::decode_password(body);
    if let Some(text) = m::decode_query(body) {
        if text.contains('\0') {
            return Err("a query text with a NUL".into());
        }
    }
    if let Some(p) = m::decode_parse(body) {
        let n = i16::from_be_bytes([p.param_types[0], p.param_types[1]]);
        if n < 0 || p.param_types.len() != 2 + 4 * n as usize || p.name.contains('\0') {
            return Err(format!("Parse accepted with {n} types in {} bytes", p.param_types.len()));
        }
    }
    if let Some((mechanism, _)) = m::decode_sasl_initial(body) {
        if mechanism.contains(&0) {
            return Err("a SASL mechanism with a NUL".into());
        }
    }
    Ok(())
}

/// One SCRAM exchange with the server side: client-first (valid, mutated or random), then, if
/// that was accepted, client-final (the real one, mutated, or random). A fully valid exchange
/// must succeed.
fn scram_target(rng: &mut StdRng, st: &mut State) -> Result<(), String> {
    let mut client = ScramClient::new(PASSWORD, &st.salts);
    let valid_first = client.client_first();
    let first = pick(rng, &valid_first);
    let verifier_text = mutate::mutate(rng, st.verifier.to_string().as_bytes());
    guarded(&verifier_text, |b| {
        let _ = ScramVerifier::parse(&String::from_utf8_lossy(b));
        Ok(())
    })?;
    let mut server = ScramServer::new(&st.verifier);
    let server_first = match catch_unwind(AssertUnwindSafe(|| server.client_first(&first))) {
        Ok(Ok(reply)) => {
            st.depth.scram_first_accepted += 1;
            reply
        }
        Ok(Err(_)) => return Ok(()),
        Err(p) => return Err(format!("client_first panicked: {}\ninput: {}", panic_text(&p), hex(&first))),
    };
    let valid_final = client.server_first(&server_first).unwrap_or_default();
    let fin = pick(rng, &valid_final);
    let result = catch_unwind(AssertUnwindSafe(|| server.client_final(&fin)));
    match result {
        Err(p) => {
            Err(format!("client_final panicked: {}\nfirst: {}\nfinal: {}", panic_text(&p), hex(&first), hex(&fin)))
        }
        Ok(Err(e)) if first == valid_first && fin == valid_final => Err(format!("a valid exchange failed: {e}")),
        Ok(Err(_)) => Ok(()),
        Ok(Ok(_)) => {
            st.depth.scram_succeeded += 1;
            Ok(())
        }
    }
}

/// The valid message (a third of the time), a mutation of it, or random bytes.
fn pick(rng: &mut StdRng, valid: &[u8]) -> Vec<u8> {
    match rng.gen_range(0..6) {
        0 | 1 => valid.to_vec(),
        2..=4 => mutate::mutate(rng, valid),
        _ => mutate::random_bytes(rng, 128),
    }
}

fn startup_seeds() -> Vec<Vec<u8>> {
    let mut startup = BytesMut::new();
    m::startup_message(&mut startup, &[("user", "sluice_test"), ("database", "app"), ("options", "-c a=b")]);
    let mut minimal = BytesMut::new();
    m::startup_message(&mut minimal, &[("user", "u")]);
    let mut cancel = BytesMut::new();
    m::cancel_request(&mut cancel, 1234, -5678);
    let request = |code: i32| [8i32.to_be_bytes(), code.to_be_bytes()].concat();
    vec![
        startup.to_vec(),
        minimal.to_vec(),
        cancel.to_vec(),
        request(startup::SSL_REQUEST),
        request(startup::GSSENC_REQUEST),
    ]
}

/// Appends one message to a buffer.
type Builder = Box<dyn Fn(&mut BytesMut)>;

/// One valid message of each kind sluice builds or reads.
fn seed_messages() -> Vec<Vec<u8>> {
    let builders: Vec<Builder> = vec![
        Box::new(|b| m::query(b, "SELECT 1; SELECT 'x'")),
        Box::new(|b| m::parse(b, "s1", b"SELECT $1, $2", &[0, 2, 0, 0, 0, 23, 0, 0, 0, 25])),
        Box::new(|b| m::parse(b, "", b"SELECT 1", &[0, 0])),
        Box::new(|b| m::bind_renamed(b, b"p", "sluice_1", &[0, 1, 0, 0, 0, 1, 0, 0, 0, 1, b'7', 0, 0])),
        Box::new(|b| m::describe(b, b'S', "s1")),
        Box::new(|b| m::close(b, b'P', "p")),
        Box::new(m::sync),
        Box::new(m::terminate),
        Box::new(|b| m::password_message(b, b"md5abcdef")),
        Box::new(|b| m::sasl_initial_response(b, "SCRAM-SHA-256", b"n,,n=,r=abcdef")),
        Box::new(|b| m::sasl_response(b, b"c=biws,r=abcdef,p=AAAA")),
        Box::new(|b| m::error_response(b, m::Severity::Fatal, "57P01", "terminating connection")),
        Box::new(|b| m::authentication(b, m::auth_code::SASL, b"SCRAM-SHA-256\0\0")),
        Box::new(|b| m::parameter_status(b, "TimeZone", "UTC")),
        Box::new(|b| m::backend_key_data(b, 42, -42)),
        Box::new(|b| m::ready_for_query(b, TxStatus::InTransaction)),
        Box::new(m::parse_complete),
    ];
    builders
        .iter()
        .map(|build| {
            let mut b = BytesMut::new();
            build(&mut b);
            b.to_vec()
        })
        .collect()
}
