//! The harness itself: config rendering and the small parsers it relies on (no servers).

mod common;

use common::process_parsers::{nofile_limits, status_field_kib};
use common::{url, Proxy};

#[test]
fn urls_percent_encode_credentials() {
    let got = url("a b", "p@ss:/", 6432, "app");
    assert_eq!(got, "postgresql://a%20b:p%40ss%3A%2F@127.0.0.1:6432/app");
}

#[test]
fn later_settings_win_and_strings_are_toml_quoted() {
    let b = Proxy::builder()
        .node("n0", 5432)
        .user("u", "p\"w")
        .pool_size(5)
        .pool_size(10)
        .pool_mode("session")
        .checkout_timeout("2s");
    let t = b.toml();
    assert!(t.contains("[pool]\nsize = 10\nmode = \"session\"\ncheckout_timeout = \"2s\"\n"), "{t}");
    assert!(!t.contains("size = 5"), "{t}");
    assert!(t.starts_with("listen = \"127.0.0.1:0\"\n"), "{t}");
    let config = b.config();
    assert_eq!(config.pool.size, 10);
    assert_eq!(config.nodes[0].port, 5432);
    let user = config.user("u").unwrap();
    assert_eq!(user.secret, sluice::config::Secret::Plain("p\"w".into()));
}

#[test]
fn proc_files_are_parsed() {
    let status = "Name:\tsluice\nVmHWM:\t  204800 kB\nVmRSS:\t   10240 kB\n";
    assert_eq!(status_field_kib(status, "VmHWM"), Some(204_800));
    assert_eq!(status_field_kib(status, "VmRSS"), Some(10_240));
    assert_eq!(status_field_kib(status, "VmSwap"), None);
    let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                  Max open files            1024                 524288               files     \n";
    assert_eq!(nofile_limits(limits), Some((1024, 524_288)));
}

#[test]
fn the_open_files_limit_can_be_raised() {
    assert!(common::raise_nofile_limit() >= 1024);
}
