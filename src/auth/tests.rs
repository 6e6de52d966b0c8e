//! Cross-part tests: our client against our server, against `postgres-protocol`'s client, the mock
//! path, and property tests that no input makes any step panic.

use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use std::sync::Arc;

use proptest::prelude::*;

use super::*;

/// Made by PostgreSQL 15 (`ALTER ROLE ... PASSWORD 'sluice-pw'` with `scram-sha-256`).
const PG_VERIFIER: &str = "SCRAM-SHA-256$4096:gXQccDUlGVFILTOhbow5Zg==$\
    BEjfXnf0aW5M6UCKtso6FRdlS9tGUqB9taMXWEbJjso=:UQe4AJCoUGDjE5fso/+K+bHVj7ZLqlZW8jpn01EEn4g=";
const PG_PASSWORD: &str = "sluice-pw";

/// Runs our client against our server; returns the server's verdict (the client's is checked too).
fn exchange(password: &str, server: &mut ScramServer) -> Result<(), AuthError> {
    let cache = SaltCache::default();
    let mut client = ScramClient::new(password, &cache);
    let server_first = server.client_first(&client.client_first())?;
    let client_final = client.server_first(&server_first).expect("client accepts server-first");
    let server_final = server.client_final(&client_final)?;
    client.server_final(&server_final).expect("client accepts the server's signature");
    Ok(())
}

#[test]
fn round_trip_with_a_postgres_made_verifier() {
    let v = Arc::new(ScramVerifier::parse(PG_VERIFIER).unwrap());
    assert_eq!(exchange(PG_PASSWORD, &mut ScramServer::new(&v)), Ok(()));
    assert_eq!(exchange("not-it", &mut ScramServer::new(&v)), Err(AuthError::WrongPassword));
}

#[test]
fn round_trip_with_a_derived_verifier() {
    let v = Arc::new(ScramVerifier::derive("correct horse", b"0123456789abcdef", 4096));
    assert_eq!(exchange("correct horse", &mut ScramServer::new(&v)), Ok(()));
    assert_eq!(exchange("correct hors", &mut ScramServer::new(&v)), Err(AuthError::WrongPassword));
    assert_eq!(exchange("", &mut ScramServer::new(&v)), Err(AuthError::WrongPassword));
}

#[test]
fn a_login_runs_no_pbkdf2_once_keys_are_derived_and_the_salt_is_cached() {
    let runs = || crypto::PBKDF2_RUNS.with(std::cell::Cell::get);
    let cache = SaltCache::default();
    let v = Arc::new(ScramVerifier::derive("pw", b"0123456789abcdef", 4096));
    let login = |server: &mut ScramServer| {
        let mut client = ScramClient::new("pw", &cache);
        let server_first = server.client_first(&client.client_first()).unwrap();
        let server_final = server.client_final(&client.server_first(&server_first).unwrap()).unwrap();
        client.server_final(&server_final).unwrap();
    };
    login(&mut ScramServer::new(&v)); // warms the client's cache
    let before = runs();
    login(&mut ScramServer::new(&v));
    login(&mut ScramServer::new(&v));
    assert_eq!(runs(), before, "neither the server side nor a cached client ran PBKDF2");
    let before = runs();
    assert_eq!(exchange("pw", &mut ScramServer::mock()), Err(AuthError::WrongPassword));
    assert_eq!(runs(), before + 1, "only the fresh client's cache miss; the mock runs none");
}

#[test]
fn mock_exchange_runs_to_the_end_and_fails_like_a_wrong_password() {
    let mut server = ScramServer::mock();
    assert_eq!(exchange("anything", &mut server), Err(AuthError::WrongPassword));
    let mut server = ScramServer::mock_for_user("ghost", &[1; 32]);
    assert_eq!(exchange("anything", &mut server), Err(AuthError::WrongPassword));
}

/// Runs `postgres-protocol`'s client (as libpq behaves) against our server.
fn their_client(password: &str, binding: ChannelBinding, v: &Arc<ScramVerifier>) -> Result<(), AuthError> {
    let mut client = ScramSha256::new(password.as_bytes(), binding);
    let mut server = ScramServer::new(v);
    let server_first = server.client_first(client.message())?;
    client.update(&server_first).expect("their client accepts server-first");
    let server_final = server.client_final(client.message())?;
    client.finish(&server_final).expect("their client accepts our signature");
    Ok(())
}

#[test]
fn postgres_protocol_client_logs_in_with_n_and_y_flags() {
    let v = Arc::new(ScramVerifier::parse(PG_VERIFIER).unwrap());
    assert_eq!(their_client(PG_PASSWORD, ChannelBinding::unsupported(), &v), Ok(()));
    assert_eq!(their_client(PG_PASSWORD, ChannelBinding::unrequested(), &v), Ok(()));
    assert_eq!(their_client("nope", ChannelBinding::unsupported(), &v), Err(AuthError::WrongPassword));
    let uni = Arc::new(ScramVerifier::derive("p\u{e4}ss\u{a0}\u{2168}", b"salt", 16));
    assert_eq!(their_client("p\u{e4}ss IX", ChannelBinding::unsupported(), &uni), Ok(()));
    let plus = their_client(PG_PASSWORD, ChannelBinding::tls_server_end_point(vec![0; 32]), &v);
    assert_eq!(plus, Err(AuthError::ChannelBindingUnsupported("tls-server-end-point".into())));
}

/// A server that has answered client-first for a client with password `pw`; returns the matching
/// client-final too.
/// Nonces are fixed so that the valid message a strategy mutates is the one the server expects,
/// and mutations reach the proof check.
fn server_awaiting_final(cache: &SaltCache) -> (ScramServer, Vec<u8>) {
    let v = Arc::new(ScramVerifier::derive("pw", b"salt", 2));
    let mut server = ScramServer::with_nonce(&v, "server-nonce");
    let mut client = ScramClient::with_nonce("pw", cache, "", "client-nonce");
    let server_first = server.client_first(&client.client_first()).unwrap();
    let client_final = client.server_first(&server_first).unwrap();
    (server, client_final)
}

/// A client that has sent client-final to a server; returns the server's server-final too.
fn client_awaiting_final(cache: &SaltCache) -> (ScramClient, Vec<u8>) {
    let v = Arc::new(ScramVerifier::derive("pw", b"salt", 2));
    let mut server = ScramServer::with_nonce(&v, "server-nonce");
    let mut client = ScramClient::with_nonce("pw", cache, "", "client-nonce");
    let server_first = server.client_first(&client.client_first()).unwrap();
    let server_final = server.client_final(&client.server_first(&server_first).unwrap()).unwrap();
    (client, server_final)
}

/// Either some arbitrary bytes, or a valid message with one byte changed or cut short.
fn mutated(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = valid.len();
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        (0..len, any::<u8>()).prop_map({
            let valid = valid.clone();
            move |(i, b)| {
                let mut m = valid.clone();
                m[i] = b;
                m
            }
        }),
        (0..len).prop_map(move |n| valid[..n].to_vec()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn server_client_first_never_panics(msg in mutated(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO".to_vec())) {
        let v = Arc::new(ScramVerifier::derive("pw", b"salt", 1));
        let _ = ScramServer::new(&v).client_first(&msg);
    }

    #[test]
    fn server_client_final_never_panics_nor_accepts_a_changed_message(
        msg in mutated(server_awaiting_final(&SaltCache::default()).1)
    ) {
        let cache = SaltCache::default();
        let (mut server, valid) = server_awaiting_final(&cache);
        let res = server.client_final(&msg);
        prop_assert!(res.is_err() || msg == valid);
        prop_assert!(res.is_ok() || msg != valid);
    }

    #[test]
    fn client_server_first_never_panics(
        msg in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..200),
            ("[ -~]{0,40}", "[ -~]{0,12}", 0u32..4).prop_map(|(r, s, i)| format!("r={r},s={s},i={i}").into_bytes()),
        ]
    ) {
        let mut client = ScramClient::new("pw", &SaltCache::default());
        client.client_first();
        let _ = client.server_first(&msg);
    }

    #[test]
    fn client_server_final_never_panics(msg in mutated(client_awaiting_final(&SaltCache::default()).1)) {
        thread_local!(static CACHE: SaltCache = SaltCache::default());
        let (mut client, valid) = CACHE.with(client_awaiting_final);
        let res = client.server_final(&msg);
        prop_assert!(res.is_err() || msg == valid);
        prop_assert!(res.is_ok() || msg != valid);
    }

    #[test]
    fn verifier_parse_never_panics(s in "\\PC{0,120}") {
        let _ = ScramVerifier::parse(&s);
        let _ = ScramVerifier::parse(&format!("SCRAM-SHA-256${s}"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_passwords_round_trip(
        password in "\\PC{0,40}",
        other in "\\PC{0,40}",
        salt in proptest::collection::vec(any::<u8>(), 1..24),
        iterations in 1u32..32,
    ) {
        let v = Arc::new(ScramVerifier::derive(&password, &salt, iterations));
        prop_assert_eq!(exchange(&password, &mut ScramServer::new(&v)), Ok(()));
        let parsed = Arc::new(ScramVerifier::parse(&v.to_string()).unwrap());
        prop_assert_eq!(exchange(&password, &mut ScramServer::new(&parsed)), Ok(()));
        if crypto::normalize(&other) != crypto::normalize(&password) {
            prop_assert_eq!(exchange(&other, &mut ScramServer::new(&v)), Err(AuthError::WrongPassword));
        }
    }
}

/// `postgres-protocol`'s client (libpq's behaviour) against our server with channel binding as
/// the transport and the client's mechanism choice set it up.
fn bound_login(server_binding: ChannelBindingOffer, client: ChannelBinding) -> Result<(), AuthError> {
    let v = Arc::new(ScramVerifier::parse(PG_VERIFIER).unwrap());
    let mut their = ScramSha256::new(PG_PASSWORD.as_bytes(), client);
    let mut server = ScramServer::new(&v).with_binding(server_binding);
    let server_first = server.client_first(their.message())?;
    their.update(&server_first).expect("their client accepts server-first");
    let server_final = server.client_final(their.message())?;
    their.finish(&server_final).expect("their client accepts our signature");
    assert!(server.client_key().is_some());
    Ok(())
}

use super::ChannelBinding as ChannelBindingOffer;

#[test]
fn channel_binding_follows_postgresql_rules() {
    let hash: std::sync::Arc<[u8]> = vec![7u8; 32].into();
    let tls = |plus| ChannelBindingOffer { end_point: Some(hash.clone()), plus };
    let plain = |plus| ChannelBindingOffer { end_point: None, plus };
    let right = || ChannelBinding::tls_server_end_point(hash.to_vec());
    let wrong = || ChannelBinding::tls_server_end_point(vec![8u8; 32]);
    let negotiation = |m| Err(AuthError::ChannelBindingNegotiation(m));
    let cases: Vec<(ChannelBindingOffer, ChannelBinding, Result<(), AuthError>)> = vec![
        (tls(true), right(), Ok(())),
        (tls(true), wrong(), Err(AuthError::ChannelBindingMismatch)),
        (tls(false), ChannelBinding::unsupported(), Ok(())),
        (
            tls(false),
            ChannelBinding::unrequested(),
            negotiation("client supports channel binding but did not use it although SCRAM-SHA-256-PLUS was offered"),
        ),
        (
            tls(true),
            ChannelBinding::unsupported(),
            negotiation("client selected SCRAM-SHA-256-PLUS but sent no channel binding"),
        ),
        (tls(false), right(), negotiation("client requested channel binding with SCRAM-SHA-256, which has none")),
        (plain(false), ChannelBinding::unrequested(), Ok(())),
        (plain(false), right(), Err(AuthError::ChannelBindingUnsupported("tls-server-end-point".into()))),
        (plain(true), right(), negotiation("client selected SCRAM-SHA-256-PLUS, which was not offered")),
    ];
    for (offer, client, want) in cases {
        let label = format!("{offer:?}");
        assert_eq!(bound_login(offer, client), want, "{label}");
    }
}

#[test]
fn pass_through_keys_answer_a_fresh_server_challenge() {
    let v = Arc::new(ScramVerifier::parse(PG_VERIFIER).unwrap());
    let mut login = ScramServer::new(&v);
    exchange(PG_PASSWORD, &mut login).unwrap();
    let keys = ScramKeys { client_key: login.client_key().expect("a proven key"), server_key: *v.server_key() };
    // Another exchange (new nonces) with the same verifier, as PostgreSQL runs it.
    let mut server = ScramServer::new(&v);
    let mut client = ScramClient::with_keys(keys);
    let server_first = server.client_first(&client.client_first()).unwrap();
    let server_final = server.client_final(&client.server_first(&server_first).unwrap()).unwrap();
    client.server_final(&server_final).expect("the server's signature checks out with the stored ServerKey");
    // Failed and mock logins recover nothing.
    let mut failed = ScramServer::new(&v);
    assert!(exchange("nope", &mut failed).is_err());
    assert!(failed.client_key().is_none());
    let mut mock = ScramServer::mock();
    assert!(exchange(PG_PASSWORD, &mut mock).is_err());
    assert!(mock.client_key().is_none());
    // Keys from another verifier are refused by the server.
    let other = Arc::new(ScramVerifier::derive(PG_PASSWORD, b"another salt", 4096));
    let mut server = ScramServer::new(&other);
    let mut client = ScramClient::with_keys(keys);
    let server_first = server.client_first(&client.client_first()).unwrap();
    assert_eq!(server.client_final(&client.server_first(&server_first).unwrap()), Err(AuthError::WrongPassword));
}
