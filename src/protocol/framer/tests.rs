use super::*;
use proptest::prelude::*;

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn frames_of(chunks: &[&[u8]], max: usize) -> Result<Vec<Frame>, FrameError> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for c in chunks {
        buf.extend_from_slice(c);
        while let Some(f) = split_frame(&mut buf, max)? {
            out.push(f);
        }
    }
    Ok(out)
}

#[test]
fn every_split_point_yields_the_same_frames() {
    let stream: Vec<u8> = [msg(b'Q', b"select 1\0"), msg(b'S', b""), msg(b'D', &[7; 300])].concat();
    let whole = frames_of(&[&stream], 1 << 20).unwrap();
    assert_eq!(whole.len(), 3);
    for i in 0..=stream.len() {
        let (a, b) = stream.split_at(i);
        assert_eq!(frames_of(&[a, b], 1 << 20).unwrap(), whole, "split at {i}");
    }
}

#[test]
fn bad_lengths_are_refused_before_the_payload_arrives() {
    assert_eq!(frames_of(&[&[b'Q', 0, 0, 0, 3]], 100), Err(FrameError::LengthTooSmall(3)));
    assert_eq!(
        frames_of(&[&[b'Q', 0x7f, 0xff, 0xff, 0xff]], 100),
        Err(FrameError::TooLarge { len: 0x8000_0000, max: 100 })
    );
    assert_eq!(frames_of(&[&[b'Q', 0xff, 0xff, 0xff, 0xff]], 100), Err(FrameError::LengthTooSmall(-1)));
}

#[test]
fn complete_prefix_stops_after_the_stop_tag() {
    let stream: Vec<u8> = [msg(b'D', b"ab"), msg(b'Z', b"I"), msg(b'D', b"c")].concat();
    let (n, stopped) = complete_prefix(&stream, 1 << 20, |t, _| t == b'Z').unwrap();
    assert!(stopped);
    assert_eq!(n, 7 + 6);
    let (n, stopped) = complete_prefix(&stream[..15], 1 << 20, |_, _| false).unwrap();
    assert!(!stopped);
    assert_eq!(n, 13);
}

#[tokio::test]
async fn reader_reports_truncation_and_clean_eof() {
    let data = [msg(b'S', b""), vec![b'Q', 0, 0]].concat();
    let mut r = FrameReader::new(&data[..], 1024);
    assert_eq!(r.next().await.unwrap().unwrap().tag(), b'S');
    assert!(matches!(r.next().await, Err(ReadError::Truncated)));
    let empty: &[u8] = &[];
    let mut r = FrameReader::new(empty, 1024);
    assert!(r.next().await.unwrap().is_none());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_split_gives_identical_frames(
        bodies in proptest::collection::vec((any::<u8>(), proptest::collection::vec(any::<u8>(), 0..64)), 1..12),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let stream: Vec<u8> = bodies.iter().flat_map(|(t, b)| msg(*t, b)).collect();
        let whole = frames_of(&[&stream], 1 << 16).unwrap();
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut last = 0;
        for p in points { chunks.push(&stream[last..p]); last = p; }
        chunks.push(&stream[last..]);
        prop_assert_eq!(frames_of(&chunks, 1 << 16).unwrap(), whole);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = frames_of(&[&data], 256);
        let _ = complete_prefix(&data, 256, |t, _| t == b'Z');
    }
}

#[tokio::test]
async fn unaccepted_tags_are_refused_before_their_body_arrives() {
    // A second StartupMessage after login looks like tag 0x00 with a large length: refuse it at
    // once instead of waiting for 6,912 bytes that never come.
    let (mut client, server) = tokio::io::duplex(64);
    tokio::io::AsyncWriteExt::write_all(&mut client, &[0, 0, 0, 0x1b, 0, 3, 0, 0]).await.unwrap();
    let mut r = FrameReader::new(server, 8192);
    r.set_accepted_tags(|t| t == b'Q');
    assert!(matches!(r.next().await, Err(ReadError::Frame(FrameError::UnknownTag(0)))));
}

#[test]
fn read_sizer_grows_on_full_reads_and_shrinks_on_small_ones() {
    // (room offered, bytes read) -> next room
    let steps: [(usize, usize, usize); 8] = [
        (MIN_READ, MIN_READ, 2 * MIN_READ),
        (2 * MIN_READ, 2 * MIN_READ, 4 * MIN_READ),
        (4 * MIN_READ, 3 * MIN_READ, 4 * MIN_READ),
        (4 * MIN_READ, MIN_READ - 1, 2 * MIN_READ),
        (2 * MIN_READ, 10, MIN_READ),
        (MIN_READ, 10, MIN_READ),
        (MIN_READ, 0, MIN_READ),
        (MIN_READ, MIN_READ, 2 * MIN_READ),
    ];
    let mut sizer = ReadSizer::default();
    assert_eq!(sizer.next(), MIN_READ);
    for (i, (room, got, next)) in steps.into_iter().enumerate() {
        sizer.after_read(room, got);
        assert_eq!(sizer.next(), next, "step {i}");
    }
    for _ in 0..32 {
        sizer.after_read(sizer.next(), sizer.next());
    }
    assert_eq!(sizer.next(), MAX_READ);
    assert!(!sizer.should_shrink(MAX_READ), "a busy reader keeps its buffer");
    assert!(!ReadSizer::default().should_shrink(4 * MIN_READ));
    assert!(ReadSizer::default().should_shrink(4 * MIN_READ + 1));
}

#[tokio::test]
async fn reader_starts_small_grows_for_a_large_message_and_gives_the_room_back() {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let mut r = FrameReader::new(server, 1 << 20);
    assert_eq!(r.buffer().capacity(), 0, "no buffer before the first read");
    let big = msg(b'D', &vec![7u8; 300 * 1024]);
    tokio::io::AsyncWriteExt::write_all(&mut client, &big).await.unwrap();
    assert_eq!(r.next().await.unwrap().unwrap().bytes().len(), big.len());
    // Small messages after the large one: the large buffer is let go once drained.
    for _ in 0..8 {
        tokio::io::AsyncWriteExt::write_all(&mut client, &msg(b'Q', b"SELECT 1\0")).await.unwrap();
        assert_eq!(r.next().await.unwrap().unwrap().tag(), b'Q');
    }
    tokio::io::AsyncWriteExt::write_all(&mut client, &msg(b'Q', b"SELECT 1\0")).await.unwrap();
    assert_eq!(r.next().await.unwrap().unwrap().tag(), b'Q');
    assert!(r.buffer().capacity() <= 4 * MIN_READ, "kept {} bytes", r.buffer().capacity());
}

#[tokio::test]
async fn fill_or_write_writes_while_neither_side_has_bytes_and_reads_both_sides() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // "server": sluice reads and writes it; "client": sluice only reads it.
    let (mut server_end, server) = tokio::io::duplex(16);
    let (mut client_end, client) = tokio::io::duplex(64);
    let mut server = FrameReader::new(server, 8192);
    let mut client = FrameReader::new(client, 8192);
    // More pending than the pipe holds: only part is written at once, the rest waits.
    let mut pending = BytesMut::from(&[7u8; 40][..]);
    let p = server.fill_or_write(Some(&mut client), &mut pending).await.unwrap();
    assert!(matches!(p, Progress::Wrote(16)), "{p:?}");
    assert_eq!(pending.len(), 24);
    // The pipe is full: the client's bytes are read meanwhile.
    client_end.write_all(&msg(b'S', b"")).await.unwrap();
    let p = server.fill_or_write(Some(&mut client), &mut pending).await.unwrap();
    assert!(matches!(p, Progress::PeerRead(5)), "{p:?}");
    assert_eq!(client.buffered_frame().unwrap().map(|f| f.tag()), Some(b'S'));
    // And the server's replies.
    server_end.write_all(&msg(b'Z', b"I")).await.unwrap();
    let p = server.fill_or_write(None::<&mut FrameReader<tokio::io::DuplexStream>>, &mut pending).await.unwrap();
    assert!(matches!(p, Progress::Read(6)), "{p:?}");
    // Once the other end drains the pipe, the rest goes out.
    let mut got = [0u8; 16];
    server_end.read_exact(&mut got).await.unwrap();
    let p = server.fill_or_write(Some(&mut client), &mut pending).await.unwrap();
    assert!(matches!(p, Progress::Wrote(16)), "{p:?}");
    drop(client_end);
    let p = server.fill_or_write(Some(&mut client), &mut BytesMut::new()).await.unwrap();
    assert!(matches!(p, Progress::PeerRead(0)), "end of the client's stream: {p:?}");
}

/// A reader on one end of a loopback TCP connection, and the other end.
async fn socket_reader() -> (tokio::net::TcpStream, FrameReader<crate::tls::MaybeTls>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    let (ours, _) = listener.accept().await.unwrap();
    (peer, FrameReader::new(crate::tls::MaybeTls::from(ours), 1 << 20))
}

#[tokio::test]
async fn a_lean_reader_holds_no_buffer_while_it_waits() {
    use tokio::io::AsyncWriteExt;
    let (mut peer, mut r) = socket_reader().await;
    peer.write_all(&msg(b'Q', b"SELECT 1\0")).await.unwrap();
    assert_eq!(r.next_lean().await.unwrap().unwrap().tag(), b'Q');
    let wait = std::time::Duration::from_millis(50);
    assert!(tokio::time::timeout(wait, r.next_lean()).await.is_err(), "nothing was sent");
    assert_eq!(r.buffer().capacity(), 0, "a waiting reader holds no buffer");
    // A message split across reads still arrives whole.
    let sync = msg(b'S', b"");
    peer.write_all(&sync[..2]).await.unwrap();
    let next = tokio::spawn(async move { (r.next_lean().await.unwrap().map(|f| f.tag()), r) });
    tokio::time::sleep(wait).await;
    peer.write_all(&sync[2..]).await.unwrap();
    let (tag, mut r) = next.await.unwrap();
    assert_eq!(tag, Some(b'S'));
    drop(peer);
    assert!(r.next_lean().await.unwrap().is_none(), "a clean end of stream");
}

#[tokio::test]
async fn a_lean_read_given_up_mid_message_loses_nothing() {
    use tokio::io::AsyncWriteExt;
    // The session races the read against KILL and drain and may drop it at any poll: the bytes
    // of a message begun stay in the reader, and the next read returns the message whole.
    let (mut peer, mut r) = socket_reader().await;
    let query = msg(b'Q', b"SELECT 1\0");
    peer.write_all(&query[..7]).await.unwrap();
    let wait = std::time::Duration::from_millis(50);
    assert!(tokio::time::timeout(wait, r.next_lean()).await.is_err(), "half a message");
    assert_eq!(r.buffered(), &query[..7], "the half read stays buffered");
    peer.write_all(&query[7..]).await.unwrap();
    assert_eq!(r.next_lean().await.unwrap().unwrap().bytes().as_ref(), &query[..]);
    peer.write_all(&query[..3]).await.unwrap();
    drop(peer);
    assert!(matches!(r.next_lean().await, Err(ReadError::Truncated)), "closed mid-message");
}

#[test]
fn the_word_wise_nul_search_finds_the_first_nul() {
    // Bytes around the borrow of the word-wise test (0x01 just above or below a zero, 0x80,
    // 0xff), at every length and every position of the first zero.
    for fill in [b'a', 0x01, 0x80, 0xff, 0x7f] {
        for len in 0..40 {
            let mut text = vec![fill; len];
            assert_eq!(nul_position(&text), None, "{fill:#x} {len}");
            for at in 0..len {
                text.fill(fill);
                text[at] = 0;
                for later in at..len {
                    let mut t = text.clone();
                    t[later] = 0;
                    assert_eq!(nul_position(&t), Some(at), "{fill:#x} {len} {at} {later}");
                }
            }
        }
    }
}

proptest! {
    #[test]
    fn nul_search_agrees_with_a_byte_loop(bytes in proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), any::<u8>()], 0..64)) {
        prop_assert_eq!(nul_position(&bytes), bytes.iter().position(|&c| c == 0));
    }
}

proptest! {
    #[test]
    fn cstr_reads_agree_with_a_byte_loop(bytes in proptest::collection::vec(prop_oneof![Just(0u8), any::<u8>()], 0..32)) {
        // Strings taken one after another, the empty ones (taken without the search) included.
        let mut cursor = &bytes[..];
        let mut model = &bytes[..];
        loop {
            let want = model.iter().position(|&c| c == 0).map(|end| {
                let s = &model[..end];
                model = &model[end + 1..];
                s
            });
            prop_assert_eq!(take_cstr(&mut cursor), want);
            prop_assert_eq!(cursor, model);
            if want.is_none() {
                break;
            }
        }
    }
}

/// `split_run` over a stream cut at every byte boundary: the runs it splits off, then single
/// frames for what it leaves (as a session does), give the same messages as splitting frame by
/// frame, and a run never takes a message `continues` refuses, a refused tag or a bad length.
/// (Each run's count, last tag and kinds are checked against a walk of it as it is made, in
/// `Frames::from_run`: an empty Parse before a named one is where reading a name byte past the
/// message would show.)
#[test]
fn runs_split_at_every_boundary_hold_the_same_messages() {
    let stream: Vec<u8> = [
        msg(b'P', b"\0select 1\0\0\0"),
        msg(b'B', &[0; 8]),
        msg(b'P', b""),
        msg(b'P', b"s1\0select 3\0\0\0"),
        msg(b'E', b"\0\0\0\0\0"),
        msg(b'S', b""),
        msg(b'Q', b"select 2\0"),
        msg(b'B', &[0; 8]),
        msg(b'H', b""),
    ]
    .concat();
    let whole = frames_of(&[&stream], 1 << 20).unwrap();
    let is_ext = |t: u8| b"PBDECSH".contains(&t);
    let ends = |t: u8| t == b'S' || t == b'H';
    for i in 0..=stream.len() {
        let (a, b) = stream.split_at(i);
        let mut reader = FrameReader::new(&b""[..], 1 << 20);
        let mut got: Vec<Vec<u8>> = Vec::new();
        let mut runs = Vec::new();
        for chunk in [a, b] {
            reader.buffer().extend_from_slice(chunk);
            loop {
                if let Some(run) = reader.split_run(1024, is_ext, ends) {
                    assert!(run.iter().take(run.len() - 1).all(|m| !ends(m.tag())), "a run ends at its Sync or Flush");
                    runs.push(run.iter().map(|m| m.tag()).collect::<Vec<u8>>());
                    got.extend(run.iter().map(|m| m.bytes().to_vec()));
                } else if let Some(f) = reader.buffered_frame().unwrap() {
                    got.push(f.bytes().to_vec());
                } else {
                    break;
                }
            }
        }
        let want: Vec<Vec<u8>> = whole.iter().map(|f| f.bytes().to_vec()).collect();
        assert_eq!(got, want, "split at {i}");
        assert!(runs.iter().all(|r| !r.contains(&b'Q')), "split at {i}: a Query is never in a run");
    }
    // At most `max_messages`; a bad length or a refused tag is left for `buffered_frame` to report.
    let mut reader = FrameReader::new(&b""[..], 1 << 20);
    reader.buffer().extend_from_slice(&stream);
    assert_eq!(reader.split_run(2, is_ext, ends).map(|r| r.len()), Some(2));
    let mut bad = FrameReader::new(&b""[..], 1 << 20);
    bad.buffer().extend_from_slice(&[msg(b'B', &[0; 8]), vec![b'E', 0, 0, 0, 2]].concat());
    assert_eq!(bad.split_run(1024, is_ext, ends).map(|r| r.len()), Some(1));
    assert_eq!(bad.split_run(1024, is_ext, ends), None);
    assert_eq!(bad.buffered_frame(), Err(FrameError::LengthTooSmall(2)));
    let mut refused = FrameReader::new(&b""[..], 1 << 20);
    refused.set_accepted_tags(|t| t != b'z');
    refused.buffer().extend_from_slice(&[msg(b'P', b"\0x\0\0\0"), msg(b'B', &[0; 8]), msg(b'z', b"")].concat());
    assert_eq!(refused.split_run(1024, is_ext, ends).map(|r| r.len()), Some(2));
    assert_eq!(refused.split_run(1024, is_ext, ends), None);
    assert_eq!(refused.buffered_whole(), Err(FrameError::UnknownTag(b'z')));
    let mut whole = FrameReader::new(&b""[..], 1 << 20);
    whole.buffer().extend_from_slice(&stream[..20]);
    let (t, total) = whole.buffered_whole().unwrap().expect("a whole Parse");
    assert_eq!((t, whole.split_whole(total).map(|f| f.bytes().len())), (b'P', Some(total)));
    assert_eq!(whole.buffered_whole(), Ok(None), "the Bind is not whole");
}
