use super::*;
use crate::protocol::TxStatus;
use bytes::{BufMut, Bytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[test]
fn one_column_reads_as_the_whole_row_does() {
    let row = |values: &[Option<&str>]| {
        let mut b = BytesMut::new();
        messages::data_row(&mut b, values);
        Frame::from_bytes(b.freeze())
    };
    let mut rows =
        vec![row(&[Some("16/B374D848")]), row(&[None, Some("x"), Some("")]), row(&[]), row(&[Some("a\u{e9}b"), None])];
    let mut bad = BytesMut::from(&row(&[Some("ab"), Some("cd")]).into_bytes()[..]);
    bad.truncate(bad.len() - 1);
    let len = i32::try_from(bad.len() - 1).unwrap();
    bad[1..5].copy_from_slice(&len.to_be_bytes());
    rows.push(Frame::from_bytes(bad.freeze()));
    let mut invalid = BytesMut::from(&row(&[Some("ab")]).into_bytes()[..]);
    let end = invalid.len() - 1;
    invalid[end] = 0xff;
    rows.push(Frame::from_bytes(invalid.freeze()));
    for (r, f) in rows.iter().enumerate() {
        let all = columns(f);
        for i in 0..4 {
            let want = all.get(i).cloned().flatten();
            assert_eq!(column(f, i).map(|c| c.into_owned()), want, "row {r} column {i}");
        }
    }
    assert!(columns(&rows[4]).is_empty(), "the truncated row is malformed");
    assert_eq!(column(&rows[0], 0).as_deref().and_then(parse_lsn), parse_lsn("16/B374D848"));
}

/// A fake server on an in-memory pipe: the login, then `reply` to the first query.
async fn fake_server(mut io: tokio::io::DuplexStream, reply: BytesMut) {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await.unwrap();
    let mut startup = vec![0u8; (u32::from_be_bytes(len) as usize).saturating_sub(4)];
    io.read_exact(&mut startup).await.unwrap();
    let mut out = BytesMut::new();
    messages::authentication(&mut out, messages::auth_code::OK, &[]);
    messages::backend_key_data(&mut out, 42, 7);
    messages::ready_for_query(&mut out, TxStatus::Idle);
    io.write_all(&out).await.unwrap();
    let mut reader = FrameReader::new(io, 1 << 20);
    let query = reader.next().await.unwrap().unwrap();
    assert_eq!(query.tag(), tag::QUERY);
    reader.get_mut().write_all(&reply).await.unwrap();
    // Keep the pipe open until the connection is dropped.
    let _ = reader.next().await;
}

fn notification(pid: i32, payload: &str) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_u8(tag::NOTIFICATION);
    b.put_i32(i32::try_from(4 + 4 + 3 + payload.len() + 1).unwrap());
    b.put_i32(pid);
    b.put_slice(b"ch\0");
    b.put_slice(payload.as_bytes());
    b.put_u8(0);
    b
}

async fn connect_to(reply: BytesMut) -> ServerConn {
    let (ours, theirs) = tokio::io::duplex(1 << 16);
    tokio::spawn(fake_server(theirs, reply));
    let pipe = std::sync::Mutex::new(Some(ours));
    let dial = move |_| pipe.lock().unwrap().take().expect("one connection");
    let spec = ConnectSpec {
        node: 0,
        node_name: "node0".into(),
        host: "memory".into(),
        port: 0,
        user: "u".into(),
        database: "d".into(),
        password: None,
        timeout: Duration::from_secs(5),
        salt_cache: SaltCache::default(),
        tls: ServerTls::disabled(),
        passthrough: PassThroughKeys::default(),
        max_prepared_statements: 8,
        keepalive: None,
        memory: Some(MemoryDial(Arc::new(dial))),
    };
    ServerConn::connect(&spec).await.expect("the fake server's login")
}

/// A listening backend sends what it was signalled for before its next ReadyForQuery,
/// here in the reply to sluice's own query: the notifications are kept, in order, for the
/// session to forward, and are not rows.
#[tokio::test]
async fn notifications_in_an_internal_reply_are_kept_for_the_session() {
    let mut reply = BytesMut::new();
    messages::row_description(&mut reply, &["lsn"]);
    reply.extend_from_slice(&notification(42, "first"));
    messages::data_row(&mut reply, &[Some("0/16B3748")]);
    messages::command_complete(&mut reply, "SELECT 1");
    reply.extend_from_slice(&notification(42, "second"));
    messages::ready_for_query(&mut reply, TxStatus::Idle);
    let mut conn = connect_to(reply).await;
    let rows = conn.run_internal("SELECT pg_catalog.pg_current_wal_insert_lsn()").await.expect("the reply");
    assert_eq!(rows.len(), 1);
    assert!(conn.has_notifications());
    let kept: Vec<Bytes> = conn.take_notifications().into_iter().map(Frame::into_bytes).collect();
    assert_eq!(kept, [notification(42, "first").freeze(), notification(42, "second").freeze()]);
    assert!(!conn.has_notifications(), "taken once");
}

#[test]
fn lsns_parse_and_order() {
    assert_eq!(super::parse_lsn("0/0"), Some(0));
    assert_eq!(super::parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374_D848));
    assert!(super::parse_lsn("1/0") > super::parse_lsn("0/FFFFFFFF"));
    assert_eq!(super::parse_lsn("x"), None);
}
