use super::*;
use proptest::prelude::*;
use std::time::Duration;

fn packet(code: i32, body: &[u8]) -> Vec<u8> {
    let mut v = ((body.len() + 8) as i32).to_be_bytes().to_vec();
    v.extend_from_slice(&code.to_be_bytes());
    v.extend_from_slice(body);
    v
}

#[test]
fn startup_parameters_are_parsed_in_order() {
    let p = parse(&packet(PROTOCOL_3_0, b"user\0app\0database\0db\0\0")).unwrap();
    assert_eq!(p, StartupPacket::Startup { params: StartupParams::from_pairs([("user", "app"), ("database", "db")]) });
}

#[test]
fn malformed_packets_are_refused() {
    for bad in [
        packet(PROTOCOL_3_0, b"user\0app\0"), // list not terminated
        packet(PROTOCOL_3_0, b"user\0app"),   // value not terminated
        packet(PROTOCOL_3_0, b"user\0\0"),    // key without value
        packet(PROTOCOL_3_0, b"\0"),          // no parameters
        packet(CANCEL_REQUEST, &[0; 4]),      // short cancel
        packet(SSL_REQUEST, b"x"),            // request with a body
    ] {
        assert!(parse(&bad).is_err(), "{bad:?} accepted");
    }
    assert_eq!(parse(&packet(0x0002_0000, b"")), Err(StartupError::UnsupportedProtocol { major: 2, minor: 0 }));
    let mut lying = packet(PROTOCOL_3_0, b"user\0a\0\0");
    lying[3] += 1;
    assert!(matches!(parse(&lying), Err(StartupError::BadLength(_))));
}

/// `read_packet` through a fresh buffer, within `timeout` from now.
async fn read_one<R: AsyncRead + Unpin>(io: &mut R, timeout: Duration) -> Result<StartupPacket, StartupError> {
    read_packet(io, &mut BytesMut::new(), Instant::now() + timeout).await
}

/// A deadline no read from memory comes near.
fn soon() -> Instant {
    Instant::now() + Duration::from_secs(1)
}

#[tokio::test]
async fn short_and_silent_packets_end_quickly() {
    let data = packet(PROTOCOL_3_0, b"user\0a\0\0");
    let mut half = &data[..6];
    assert_eq!(read_one(&mut half, Duration::from_secs(1)).await, Err(StartupError::Truncated));
    let (mut client, mut server) = tokio::io::duplex(64);
    let _keep = &mut client;
    assert_eq!(read_one(&mut server, Duration::from_millis(20)).await, Err(StartupError::Timeout));
    let mut huge: &[u8] = &[0x7f, 0, 0, 0, 0, 0, 0, 0];
    assert!(matches!(read_one(&mut huge, Duration::from_secs(1)).await, Err(StartupError::BadLength(_))));
}

#[tokio::test]
async fn a_packet_is_read_whole_and_what_follows_stays_in_the_buffer() {
    use tokio::io::AsyncWriteExt;
    // An SSLRequest with the next packet right behind it: both come in one read; the request
    // is taken, the next packet stays buffered and is taken by the next call without a read.
    let startup = packet(PROTOCOL_3_0, b"user\0a\0\0");
    let mut both = packet(SSL_REQUEST, b"");
    both.extend(&startup);
    let mut rest = &both[..];
    let mut buf = BytesMut::new();
    assert_eq!(read_packet(&mut rest, &mut buf, soon()).await, Ok(StartupPacket::SslRequest));
    assert!(rest.is_empty(), "one read brought both");
    assert_eq!(&buf[..], &startup[..]);
    let want = Ok(StartupPacket::Startup { params: StartupParams::from_pairs([("user", "a")]) });
    assert_eq!(read_packet(&mut rest, &mut buf, soon()).await, want);
    assert!(buf.is_empty());
    // A packet longer than one read, with a query behind it: read whole, the query kept.
    let long = packet(PROTOCOL_3_0, format!("user\0a\0application_name\0{}\0\0", "x".repeat(900)).as_bytes());
    let mut wire = long.clone();
    wire.extend(b"Q\0\0\0\x0dSELECT 1\0");
    let mut rest = &wire[..];
    let mut buf = BytesMut::new();
    assert!(matches!(read_packet(&mut rest, &mut buf, soon()).await, Ok(StartupPacket::Startup { .. })));
    assert_eq!(&buf[..], b"Q\0\0\0\x0dSELECT 1\0");
    // The same packet one byte at a time; a bad length is refused once its 4 bytes are in.
    let (mut client, mut server) = tokio::io::duplex(64);
    let data = startup.clone();
    let writer = tokio::spawn(async move {
        for b in data {
            client.write_all(&[b]).await.unwrap();
            tokio::task::yield_now().await;
        }
        client
    });
    let got = read_one(&mut server, Duration::from_secs(5)).await;
    assert_eq!(got, want);
    let _client = writer.await.unwrap();
    let (mut client, mut server) = tokio::io::duplex(64);
    client.write_all(&[0, 0, 0, 4]).await.unwrap();
    assert_eq!(read_one(&mut server, Duration::from_secs(5)).await, Err(StartupError::BadLength(4)));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]
    #[test]
    fn arbitrary_packets_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse(&data);
    }

    #[test]
    fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..200), code in prop_oneof![Just(PROTOCOL_3_0), Just(CANCEL_REQUEST), Just(SSL_REQUEST), any::<i32>()]) {
        let _ = parse(&packet(code, &body));
    }
}

#[test]
fn startup_parameters_walk_in_order_with_empty_values_and_the_first_of_a_name_counts() {
    let p = parse(&packet(PROTOCOL_3_0, b"user\0a\0application_name\0\0user\0b\0database\0d\0\0")).unwrap();
    let StartupPacket::Startup { params } = p else { panic!("not a startup packet: {p:?}") };
    let pairs: Vec<_> = params.iter().collect();
    assert_eq!(pairs, [("user", "a"), ("application_name", ""), ("user", "b"), ("database", "d")]);
    assert_eq!((params.get("user"), params.get("application_name"), params.get("x")), (Some("a"), Some(""), None));
    assert_eq!(params, StartupParams::from_pairs(pairs));
}

#[test]
fn a_string_that_is_not_utf8_is_reported_before_a_later_fault_only() {
    let not_utf8 = Err(StartupError::Malformed("parameter is not UTF-8"));
    // Checked as one text at the end, yet reported as when each string was checked as read: a
    // whole pair before the fault first, the pair that has the fault not.
    assert_eq!(parse(&packet(PROTOCOL_3_0, b"user\0\xff\0database\0d\0\0")), not_utf8);
    assert_eq!(parse(&packet(PROTOCOL_3_0, b"user\0\xff\0database\0d\0")), not_utf8);
    assert_eq!(parse(&packet(PROTOCOL_3_0, b"user\0\xff\0x")), not_utf8);
    assert_eq!(
        parse(&packet(PROTOCOL_3_0, b"user\0a\0\xff\0")),
        Err(StartupError::Malformed("parameter without a value"))
    );
    assert_eq!(
        parse(&packet(PROTOCOL_3_0, b"user\0a\0\xff")),
        Err(StartupError::Malformed("parameter is not terminated"))
    );
}
