//! auth_query: users the configuration does not list log in with the SCRAM verifier looked up
//! on the primary, and sluice logs in to the servers as them with the ClientKey from their own
//! proof (no password anywhere in the configuration).

mod common;

use std::time::Duration;

use common::{expect_sqlstate, Cluster, Proxy, ProxyBuilder, UserSpec};
use sluice::pgcluster::TEST_DATABASE;

/// A SECURITY DEFINER function lets an unprivileged lookup user read verifiers.
const SETUP: &str = "CREATE ROLE sluice_lookup LOGIN PASSWORD 'lookup-pw';
CREATE FUNCTION public.sluice_lookup(p_user text, OUT rolname name, OUT rolpassword text)
  RETURNS SETOF record LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog
  AS $$ SELECT rolname, rolpassword FROM pg_authid WHERE rolname = p_user $$;
REVOKE ALL ON FUNCTION public.sluice_lookup(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.sluice_lookup(text) TO sluice_lookup;
CREATE ROLE alice LOGIN PASSWORD 'alice-pw';
CREATE ROLE bob LOGIN PASSWORD 'bob-pw';
CREATE TABLE public.notes (n int);
GRANT SELECT, INSERT ON public.notes TO alice;";

fn lookup_proxy(c: &Cluster, lookup_user: &str, query: &str) -> ProxyBuilder {
    Proxy::builder()
        .cluster(c)
        .monitor_interval("100ms")
        .user_spec(UserSpec::scram(lookup_user, "lookup-pw"))
        .set("auth", "user", &format!("{lookup_user:?}"))
        .set("auth", "query", &format!("{query:?}"))
        .set("auth", "cache_ttl", "\"1s\"")
}

#[tokio::test(flavor = "multi_thread")]
async fn unlisted_users_log_in_with_scram_pass_through() {
    let c = Cluster::start(1).await;
    c.psql(SETUP).await;
    c.wait_replayed().await;
    let builder = lookup_proxy(&c, "sluice_lookup", "SELECT * FROM public.sluice_lookup($1)");
    assert!(!builder.toml().contains("alice"), "the configuration must not name alice");
    let p = builder.start().await;
    p.wait_topology(1, 1).await;

    let alice = p.connect_as("alice", "alice-pw", TEST_DATABASE).await;
    // Reads first: after a write, read-your-writes may keep them on the primary for a while.
    let read: i32 = alice.query_one("SELECT inet_server_port()", &[]).await.unwrap().get(0);
    assert_eq!(read as u16, c.replica_ports()[0], "the read did not run on the replica");
    let write: i32 =
        alice.query_one("INSERT INTO notes VALUES (1) RETURNING inet_server_port()", &[]).await.unwrap().get(0);
    assert_eq!(write as u16, c.primary_port(), "the write ran elsewhere");
    let me: String = alice.query_one("SELECT current_user::text", &[]).await.unwrap().get(0);
    assert_eq!(me, "alice");

    expect_sqlstate(p.try_connect_as("alice", "wrong", TEST_DATABASE).await, "28P01");
    expect_sqlstate(p.try_connect_as("nobody", "x", TEST_DATABASE).await, "28P01");

    // A dropped role cannot log in once its cached verifier has expired.
    let bob = p.connect_as("bob", "bob-pw", TEST_DATABASE).await;
    bob.simple_query("SELECT 1").await.unwrap();
    drop(bob);
    c.psql("DROP ROLE bob").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match p.try_connect_as("bob", "bob-pw", TEST_DATABASE).await {
            Err(e) => {
                assert_eq!(common::sqlstate(&e).as_deref(), Some("28P01"), "{e:?}");
                break;
            }
            Ok(_) => assert!(tokio::time::Instant::now() < deadline, "bob still logs in after the TTL"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(alice);

    // The lookup's own failures name their cause.
    let no_fn = lookup_proxy(&c, "sluice_lookup", "SELECT * FROM public.no_such_lookup($1)").start().await;
    let msg = expect_sqlstate(no_fn.try_connect_as("alice", "alice-pw", TEST_DATABASE).await, "28000");
    assert!(msg.contains("auth_query failed") && msg.contains("no_such_lookup"), "{msg}");
    let no_user = lookup_proxy(&c, "ghost_lookup", "SELECT * FROM public.sluice_lookup($1)").start().await;
    let msg = expect_sqlstate(no_user.try_connect_as("alice", "alice-pw", TEST_DATABASE).await, "28000");
    assert!(msg.contains("ghost_lookup"), "{msg}");

    c.stop_node(0).await.unwrap();
    p.wait_topology(0, 1).await;
    let msg = expect_sqlstate(p.try_connect_as("carol", "x", TEST_DATABASE).await, "08006");
    assert!(msg.contains("no primary"), "{msg}");
}
