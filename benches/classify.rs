//! Classification cost: the cached path (a hash lookup), the cold lexical path, the parser
//! fallback, and a 2 KB ORM-style statement; sqlparser alone for reference.
#![allow(missing_docs)] // criterion_group! generates undocumented items

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use sluice::router::{classify, Access, Classifier};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

const POINT: &str = "SELECT id, name, email FROM users WHERE id = $1";

const JOIN3: &str = "SELECT o.id, o.total, c.name, p.title \
    FROM orders o JOIN customers c ON c.id = o.customer_id \
    JOIN products p ON p.id = o.product_id \
    WHERE o.created_at > now() - interval '1 day' AND c.country = $1 \
    ORDER BY o.created_at DESC LIMIT 50";

/// The same join with a table alias column list, which only the parser can tell from a call.
const JOIN3_PARSED: &str = "SELECT o.id, o.total, c.name, p.title \
    FROM orders o(id, total, customer_id, product_id, created_at) \
    JOIN customers c ON c.id = o.customer_id \
    JOIN products p ON p.id = o.product_id \
    WHERE o.created_at > now() - interval '1 day' AND c.country = $1 \
    ORDER BY o.created_at DESC LIMIT 50";

/// An ORM-style statement of about 2 KB: many quoted, aliased columns, joins, IN list.
fn orm_statement() -> String {
    let mut sql = String::from("SELECT ");
    let mut i = 0;
    while sql.len() < 1500 {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!("\"t{t}\".\"column_{i}\" AS \"t{t}_column_{i}\"", t = i % 3));
        i += 1;
    }
    sql.push_str(
        " FROM \"public\".\"accounts\" AS \"t0\" \
         LEFT OUTER JOIN \"public\".\"profiles\" AS \"t1\" ON \"t1\".\"account_id\" = \"t0\".\"id\" \
         LEFT OUTER JOIN \"public\".\"settings\" AS \"t2\" ON \"t2\".\"account_id\" = \"t0\".\"id\" \
         WHERE \"t0\".\"deleted_at\" IS NULL AND \"t0\".\"id\" IN ($1, $2, $3, $4, $5, $6, $7, $8) \
         AND lower(\"t0\".\"email\") = lower($9) \
         ORDER BY \"t0\".\"created_at\" DESC, \"t0\".\"id\" ASC LIMIT 100 OFFSET 0",
    );
    sql
}

fn bench(c: &mut Criterion) {
    let orm = orm_statement();
    for sql in [POINT, JOIN3, JOIN3_PARSED, orm.as_str()] {
        assert_eq!(classify(sql).access, Access::Read, "{sql}");
    }
    let classifier = Classifier::new(10_000, Vec::new());
    let mut g = c.benchmark_group("classify");
    g.bench_function("point select, cached", |b| b.iter(|| classifier.classify(black_box(POINT))));
    g.bench_function("point select, cold", |b| b.iter(|| classifier.classify_uncached(black_box(POINT))));
    g.bench_function("3-join select, cold (lexical)", |b| b.iter(|| classifier.classify_uncached(black_box(JOIN3))));
    g.bench_function("3-join select, cold (parser fallback)", |b| {
        b.iter(|| classifier.classify_uncached(black_box(JOIN3_PARSED)))
    });
    g.bench_function(format!("ORM {} bytes, cold", orm.len()), |b| {
        b.iter(|| classifier.classify_uncached(black_box(&orm)))
    });
    g.bench_function(format!("ORM {} bytes, cached", orm.len()), |b| b.iter(|| classifier.classify(black_box(&orm))));
    g.bench_function("sqlparser alone: 3-join", |b| {
        b.iter(|| Parser::parse_sql(&PostgreSqlDialect {}, black_box(JOIN3)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
