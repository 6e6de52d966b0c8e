//! Framer throughput: messages per second split off a buffer, and header walks over a batch.
#![allow(missing_docs)] // criterion_group! generates undocumented items

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use sluice::protocol::framer::{complete_prefix, split_frame};

fn data_rows(n: usize, width: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * (width + 11));
    for _ in 0..n {
        out.push(b'D');
        out.extend_from_slice(&((width + 10) as i32).to_be_bytes());
        out.extend_from_slice(&1i16.to_be_bytes());
        out.extend_from_slice(&(width as i32).to_be_bytes());
        out.extend(std::iter::repeat_n(b'x', width));
    }
    out
}

fn framer(c: &mut Criterion) {
    let n = 1000;
    let stream = data_rows(n, 32);
    let mut g = c.benchmark_group("framer");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("split_frame 1000 x 43-byte DataRow", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&stream[..]);
            let mut count = 0;
            while let Ok(Some(f)) = split_frame(&mut buf, 1 << 20) {
                count += f.body().len();
            }
            black_box(count)
        });
    });
    g.bench_function("complete_prefix walk 1000 x 43-byte DataRow", |b| {
        b.iter(|| black_box(complete_prefix(black_box(&stream), 1 << 20, |t, _| t == b'Z')));
    });
    g.finish();
}

criterion_group!(benches, framer);
criterion_main!(benches);
