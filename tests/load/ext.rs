//! Extended-protocol messages for raw clients (the builders sluice itself does not need), and
//! reading a DataRow's text columns.

use bytes::{BufMut, BytesMut};
use sluice::protocol::{messages, tag, Frame};

/// Bind `portal` to `statement` with text parameters (`None` is NULL), text results.
pub fn bind(buf: &mut BytesMut, portal: &str, statement: &str, params: &[Option<&str>]) {
    let mut body = BytesMut::new();
    body.put_slice(portal.as_bytes());
    body.put_u8(0);
    body.put_slice(statement.as_bytes());
    body.put_u8(0);
    body.put_i16(0);
    body.put_i16(params.len() as i16);
    for p in params {
        match p {
            Some(v) => {
                body.put_i32(v.len() as i32);
                body.put_slice(v.as_bytes());
            }
            None => body.put_i32(-1),
        }
    }
    body.put_i16(0);
    buf.put_u8(tag::BIND);
    buf.put_i32(body.len() as i32 + 4);
    buf.put_slice(&body);
}

/// Parse, Bind, Execute of `sql` as the unnamed statement with text `params` (no Sync).
pub fn run_unnamed(buf: &mut BytesMut, sql: &str, params: &[Option<&str>]) {
    messages::parse(buf, "", sql.as_bytes(), &0i16.to_be_bytes());
    bind(buf, "", "", params);
    messages::execute(buf, "", 0);
}

/// A COPY data message.
pub fn copy_data(buf: &mut BytesMut, data: &[u8]) {
    buf.put_u8(tag::COPY_DATA);
    buf.put_i32(data.len() as i32 + 4);
    buf.put_slice(data);
}

/// The first column of a DataRow as text (`None`: NULL or not a DataRow).
pub fn first_column(f: &Frame) -> Option<String> {
    if f.tag() != b'D' {
        return None;
    }
    let b = f.body();
    if b.len() < 6 {
        return None;
    }
    let len = i32::from_be_bytes([b[2], b[3], b[4], b[5]]);
    let len = usize::try_from(len).ok()?;
    b.get(6..6 + len).map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The tags of `frames`, as a string (`1 2 T D C Z` -> "12TDCZ").
pub fn tags(frames: &[Frame]) -> String {
    frames.iter().map(|f| f.tag() as char).collect()
}
