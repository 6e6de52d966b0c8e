//! Login failures through sluice: SQLSTATEs and messages that do not reveal which users exist.

mod common;
mod load;

use common::{expect_sqlstate, Cluster, Proxy};
use load::wire::RawConn;
use load::Target;
use sluice::auth::SaltCache;
use sluice::pgcluster::{TEST_DATABASE, TEST_PASSWORD, TEST_USER};

#[tokio::test(flavor = "multi_thread")]
async fn bad_logins_get_the_right_sqlstate() {
    let c = Cluster::start(0).await;
    let p = Proxy::builder().cluster(&c).start().await;

    let wrong_password = p.try_connect_as(TEST_USER, "not-the-password", TEST_DATABASE).await;
    let wrong_password = expect_sqlstate(wrong_password, "28P01");
    let unknown_user = p.try_connect_as("nobody_here", TEST_PASSWORD, TEST_DATABASE).await;
    let unknown_user = expect_sqlstate(unknown_user, "28P01");
    // The same text, with the user name swapped, so a client cannot probe for users.
    assert_eq!(
        wrong_password.replace(TEST_USER, "USER"),
        unknown_user.replace("nobody_here", "USER"),
        "wrong password and unknown user must be indistinguishable"
    );

    let no_db = p.try_connect_as(TEST_USER, TEST_PASSWORD, "no_such_db").await;
    let message = expect_sqlstate(no_db, "3D000");
    assert!(message.contains("no_such_db"), "{message}");

    // Failures do not poison anything: a correct login still works.
    let client = p.connect().await;
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn extra_users_log_in_with_their_own_passwords() {
    let c = Cluster::start(0).await;
    c.create_user("alice", "alice's pw").await;
    let p = Proxy::builder().cluster(&c).user("alice", "alice's pw").start().await;
    let alice = p.connect_as("alice", "alice's pw", TEST_DATABASE).await;
    let who: String = alice.query_one("SELECT current_user::text", &[]).await.unwrap().get(0);
    assert_eq!(who, "alice");
    let bad = p.try_connect_as("alice", TEST_PASSWORD, TEST_DATABASE).await;
    expect_sqlstate(bad, "28P01");
}

/// The salt a SCRAM exchange shows an unknown name is the same at every probe, as a real
/// user's is (PostgreSQL does the same): with a salt drawn per probe, asking twice told
/// whether a name exists. Two unknown names get different salts.
#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_user_shows_one_salt_as_a_real_user_does() {
    let c = Cluster::start(0).await;
    let p = Proxy::builder().cluster(&c).start().await;
    let salt_of = |user: &'static str| {
        let port = p.port();
        async move {
            let target = Target { port, user: user.into(), password: "x".into(), database: TEST_DATABASE.into() };
            let mut conn = RawConn::connect(port).await.unwrap();
            conn.startup(&target).await.unwrap();
            let (_, server_first) = conn.scram_first("x", &SaltCache::default()).await.unwrap();
            let text = String::from_utf8(server_first).unwrap();
            text.split(',').find_map(|f| f.strip_prefix("s=")).expect("a salt").to_string()
        }
    };
    assert_eq!(salt_of(TEST_USER).await, salt_of(TEST_USER).await, "a real user's salt");
    let ghost = salt_of("nobody_here").await;
    assert_eq!(ghost, salt_of("nobody_here").await, "an unknown name's salt changed between probes");
    assert_ne!(ghost, salt_of("nobody_else").await);
}
