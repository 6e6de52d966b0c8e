use super::*;
use crate::auth::{PassThroughKeys, SaltCache};
use crate::metrics::Metrics;
use crate::tls::ServerTls;

#[test]
fn a_kept_login_status_is_written_only_for_its_state_and_spellings() {
    let p = pool(1);
    let (a, b) = (Arc::new(String::from("state a")), Arc::new(String::from("state b")));
    let at = |s: &Arc<String>| Arc::as_ptr(s).cast::<()>();
    let mut buf = bytes::BytesMut::from(&b"R"[..]);
    assert!(!p.write_login_status(at(&a), &mut buf), "nothing kept yet");
    let generation = p.spelling_generation();
    p.keep_login_status(Arc::downgrade(&a) as std::sync::Weak<dyn std::any::Any + Send + Sync>, generation, b"block");
    assert!(p.write_login_status(at(&a), &mut buf));
    assert_eq!(&buf[..], b"Rblock", "appended after what the buffer held");
    assert!(!p.write_login_status(at(&b), &mut buf), "another state");
    p.learn_spelling("DateStyle", "iso", "ISO, MDY");
    assert!(!p.write_login_status(at(&a), &mut buf), "a spelling learnt since");
    p.keep_login_status(Arc::downgrade(&a) as std::sync::Weak<dyn std::any::Any + Send + Sync>, generation, b"old");
    assert!(!p.write_login_status(at(&a), &mut buf), "made before the spelling was learnt");
    assert_eq!(&buf[..], b"Rblock");
}

fn pool(size: usize) -> Arc<Pool> {
    let spec = ConnectSpec {
        node: 0,
        node_name: "n".into(),
        host: "127.0.0.1".into(),
        port: 1,
        user: "u".into(),
        database: "d".into(),
        password: None,
        timeout: Duration::from_millis(10),
        salt_cache: SaltCache::default(),
        tls: ServerTls::disabled(),
        passthrough: PassThroughKeys::default(),
        max_prepared_statements: 10,
        keepalive: None,
        memory: None,
    };
    let cfg = PoolConfig {
        mode: crate::config::PoolMode::Transaction,
        size,
        checkout_timeout: Duration::from_millis(10),
        connect_timeout: Duration::from_millis(10),
        server_idle_timeout: Duration::from_secs(60),
        server_lifetime: Duration::from_secs(60),
        max_prepared_statements: 10,
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::new(&mut registry, &["n".to_string()]);
    Arc::new(Pool::new(spec, cfg, metrics.node(0), 1))
}

#[test]
fn grow_at_once_shrink_as_permits_return() {
    let p = pool(3);
    let held: Vec<_> = (0..3).map(|_| Arc::clone(&p.permits).try_acquire_owned().unwrap()).collect();
    assert_eq!(p.usage().1, 3);
    p.resize(1);
    assert_eq!(p.permits.available_permits(), 0);
    let mut held = held.into_iter();
    p.give_back(held.next().unwrap());
    p.give_back(held.next().unwrap());
    assert_eq!(p.permits.available_permits(), 0, "two returns pay the shrink");
    p.give_back(held.next().unwrap());
    assert_eq!(p.permits.available_permits(), 1);
    p.resize(4);
    assert_eq!(p.permits.available_permits(), 4);
    let all: Vec<_> = (0..4).map(|_| Arc::clone(&p.permits).try_acquire_owned().unwrap()).collect();
    p.resize(2);
    p.resize(3);
    all.into_iter().for_each(|permit| p.give_back(permit));
    assert_eq!(p.permits.available_permits(), 3, "a grow cancels what a shrink still owed");
}
