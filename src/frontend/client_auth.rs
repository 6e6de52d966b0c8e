//! Client authentication: SCRAM-SHA-256 (with -PLUS channel binding on TLS), md5 and trust, for
//! listed users and for users looked up on the primary (auth_query). Unknown users and wrong
//! passwords get the same `28P01` error.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::Shared;
use crate::auth::{ChannelBinding, ScramKeys, ScramServer, ScramVerifier};
use crate::config::AuthMethod;
use crate::error::sqlstate;
use crate::protocol::messages::{self, auth_code};
use crate::protocol::{tag, FrameReader};
use crate::tls::MaybeTls;

/// A refusal: SQLSTATE and message.
pub type Failure = (&'static str, String);

/// How a client authenticated (for the audit line; never a secret).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// No password.
    Trust,
    /// md5.
    Md5,
    /// SCRAM-SHA-256 without channel binding.
    Scram,
    /// SCRAM-SHA-256-PLUS with `tls-server-end-point`.
    ScramPlus,
}

impl Method {
    /// The name in the audit line.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Trust => "trust",
            Method::Md5 => "md5",
            Method::Scram => "scram-sha-256",
            Method::ScramPlus => "scram-sha-256-plus",
        }
    }
}

/// True (and `method` set) if `user` logs in by trust: nothing to exchange, so the handshake
/// skips [`authenticate`] and its timer (building and moving that future cost ~1,000
/// instructions per trust login).
pub fn trusted(shared: &Shared, user: &str, method: &mut Option<Method>) -> bool {
    let trust = shared.credentials.get(user).is_some_and(|c| matches!(c.method, AuthMethod::Trust));
    if trust {
        *method = Some(Method::Trust);
    }
    trust
}

/// Authenticate `user`. `end_point`: the channel binding data when the client is on TLS.
/// `method` is set as soon as it is known, so a failure can be audited with it.
///
/// On success, the bytes the exchange still owes the client (SCRAM's SASLFinal; empty for
/// the other methods): the caller writes them in front of what it sends next (the login's
/// AuthenticationOk and the rest), one `send` and one wake-up of the client instead of two.
///
/// # Errors
/// The SQLSTATE and message the client gets.
pub async fn authenticate(
    client: &mut FrameReader<MaybeTls>,
    shared: &Shared,
    user: &str,
    database: &str,
    end_point: Option<Arc<[u8]>>,
    method: &mut Option<Method>,
) -> Result<BytesMut, Failure> {
    let failed = || (sqlstate::INVALID_PASSWORD, format!("password authentication failed for user \"{user}\""));
    if let Some(creds) = shared.credentials.get(user) {
        let owed = match creds.method {
            AuthMethod::Trust => {
                *method = Some(Method::Trust);
                Some(BytesMut::new())
            }
            AuthMethod::Md5 => {
                *method = Some(Method::Md5);
                md5_exchange(client, creds.md5.as_deref()).await?.then(BytesMut::new)
            }
            AuthMethod::ScramSha256 => {
                scram_exchange(client, user, creds.scram.as_ref(), end_point, method).await?.map(|(_, owed)| owed)
            }
        };
        return owed.ok_or_else(failed);
    }
    let Some(lookup) = &shared.lookup else {
        scram_exchange(client, user, None, end_point, method).await?;
        return Err(failed());
    };
    // An unlisted user: its verifier comes from the primary, and the key it proves it has
    // logs sluice in to the servers as that user (SCRAM pass-through).
    let verifier = lookup.verifier(user, database).await?;
    let proved = scram_exchange(client, user, verifier.as_ref(), end_point, method).await?;
    match (proved, verifier) {
        (Some((client_key, owed)), Some(v)) => {
            shared.pools.passthrough().insert(user, ScramKeys { client_key, server_key: *v.server_key() });
            Ok(owed)
        }
        _ => Err(failed()),
    }
}

async fn send(client: &mut FrameReader<MaybeTls>, buf: &[u8]) -> Result<(), Failure> {
    client.get_mut().write_all(buf).await.map_err(|e| (sqlstate::CONNECTION_FAILURE, e.to_string()))
}

async fn read_password(client: &mut FrameReader<MaybeTls>) -> Result<bytes::Bytes, Failure> {
    match client.next().await {
        Ok(Some(f)) if f.tag() == tag::PASSWORD => Ok(f.into_bytes().slice(5..)),
        Ok(Some(f)) => {
            Err((sqlstate::PROTOCOL_VIOLATION, format!("expected a password message, got {:?}", f.tag() as char)))
        }
        Ok(None) => Err((sqlstate::CONNECTION_FAILURE, "client closed the connection during authentication".into())),
        Err(e) => Err((sqlstate::PROTOCOL_VIOLATION, e.to_string())),
    }
}

async fn md5_exchange(client: &mut FrameReader<MaybeTls>, stored: Option<&str>) -> Result<bool, Failure> {
    let salt: [u8; 4] = rand::random();
    let mut buf = BytesMut::new();
    messages::authentication(&mut buf, auth_code::MD5, &salt);
    send(client, &buf).await?;
    let body = read_password(client).await?;
    let response =
        messages::decode_password(&body).ok_or((sqlstate::PROTOCOL_VIOLATION, "malformed password message".into()))?;
    Ok(stored.is_some_and(|s| crate::auth::md5_verify(s, salt, response)))
}

/// Bytes reserved for sluice's SCRAM messages (header, code, payload).
const SCRAM_MESSAGE_CAPACITY: usize = 256;

/// Run SCRAM (a mock one for `user` without a verifier); when the client proved it, its
/// ClientKey and the SASLFinal it is owed (not sent here: see [`authenticate`]).
async fn scram_exchange(
    client: &mut FrameReader<MaybeTls>,
    user: &str,
    verifier: Option<&Arc<ScramVerifier>>,
    end_point: Option<Arc<[u8]>>,
    method: &mut Option<Method>,
) -> Result<Option<([u8; 32], BytesMut)>, Failure> {
    let offer: &[u8] =
        if end_point.is_some() { b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0" } else { b"SCRAM-SHA-256\0\0" };
    // Room for the longest of the three messages (server-first: ~100 bytes), so none grows it.
    let mut buf = BytesMut::with_capacity(SCRAM_MESSAGE_CAPACITY);
    messages::authentication(&mut buf, auth_code::SASL, offer);
    send(client, &buf).await?;
    let body = read_password(client).await?;
    let malformed = || (sqlstate::PROTOCOL_VIOLATION, "malformed SASL message".to_string());
    let (mech, data) = messages::decode_sasl_initial(&body).ok_or_else(malformed)?;
    let plus = match mech {
        b"SCRAM-SHA-256" => false,
        b"SCRAM-SHA-256-PLUS" if end_point.is_some() => true,
        _ => {
            let msg = "client selected an invalid SASL authentication mechanism";
            return Err((sqlstate::PROTOCOL_VIOLATION, msg.into()));
        }
    };
    *method = Some(if plus { Method::ScramPlus } else { Method::Scram });
    let server = verifier.map_or_else(|| ScramServer::mock_for(user), ScramServer::new);
    let mut server = server.with_binding(ChannelBinding { end_point, plus });
    let first = match server.client_first(data) {
        Ok(first) => first,
        Err(e) => return Err((sqlstate::INVALID_PASSWORD, e.to_string())),
    };
    buf.clear();
    messages::authentication(&mut buf, auth_code::SASL_CONTINUE, &first);
    send(client, &buf).await?;
    let body = read_password(client).await?;
    let Ok(last) = server.client_final(&body) else { return Ok(None) };
    buf.clear();
    messages::authentication(&mut buf, auth_code::SASL_FINAL, &last);
    Ok(server.client_key().map(|key| (key, buf)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{Topology, TopologyHandle};
    use postgres_protocol::authentication::sasl::{ChannelBinding as TheirBinding, ScramSha256};
    use tokio::io::AsyncReadExt;

    fn shared() -> Shared {
        let toml = "[[nodes]]\nname = \"pg0\"\nhost = \"127.0.0.1\"\nport = 5432\n\
                    [[users]]\nname = \"app\"\npassword = \"p\"\nauth = \"scram-sha-256\"\n";
        let config = Arc::new(crate::live::Live::new(crate::config::Config::from_toml_str(toml).unwrap()));
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = crate::metrics::Metrics::new(&mut registry, &["pg0".to_string()]);
        let pools = Arc::new(crate::backend::Pools::new(Arc::clone(&config), Arc::clone(&metrics)));
        let topology = TopologyHandle::new(Topology { generation: 1, nodes: Vec::new() });
        let (control, _requests) = crate::reload::Control::channel();
        Shared::new(config, topology, pools, metrics, control)
    }

    /// One backend message from `io`: its tag and body.
    async fn message(io: &mut tokio::io::DuplexStream) -> (u8, Vec<u8>) {
        let mut head = [0u8; 5];
        io.read_exact(&mut head).await.unwrap();
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len - 4];
        io.read_exact(&mut body).await.unwrap();
        (head[0], body)
    }

    /// A password message with `body`.
    fn password_message(body: &[u8]) -> Vec<u8> {
        let mut msg = vec![b'p'];
        msg.extend_from_slice(&u32::try_from(body.len() + 4).unwrap().to_be_bytes());
        msg.extend_from_slice(body);
        msg
    }

    /// SASLFinal is not written by the exchange: it is handed back, so that the login's reply
    /// goes out behind it in the same `send` (one wake-up of the client fewer).
    #[tokio::test]
    async fn a_scram_login_hands_back_its_sasl_final_unwritten() {
        let shared = shared();
        let (mut client, proxy) = tokio::io::duplex(4096);
        let mut proxy = FrameReader::new(MaybeTls::Memory(proxy), 4096);
        let drive = async move {
            let mut scram = ScramSha256::new(b"p", TheirBinding::unsupported());
            let (code, _) = message(&mut client).await;
            assert_eq!(code, b'R');
            let mut initial = b"SCRAM-SHA-256\0".to_vec();
            initial.extend_from_slice(&u32::try_from(scram.message().len()).unwrap().to_be_bytes());
            initial.extend_from_slice(scram.message());
            client.write_all(&password_message(&initial)).await.unwrap();
            let (_, body) = message(&mut client).await;
            assert_eq!(body[..4], auth_code::SASL_CONTINUE.to_be_bytes());
            scram.update(&body[4..]).unwrap();
            client.write_all(&password_message(scram.message())).await.unwrap();
            (client, scram)
        };
        let mut method = None;
        let (owed, (mut client, mut scram)) =
            tokio::join!(authenticate(&mut proxy, &shared, "app", "app", None, &mut method), drive);
        let owed = owed.expect("the client proved its password");
        assert_eq!(method, Some(Method::Scram));
        drop(proxy);
        let mut written = Vec::new();
        client.read_to_end(&mut written).await.unwrap();
        assert!(written.is_empty(), "the exchange wrote {written:?} after SASLContinue");
        assert_eq!(owed[0], b'R');
        assert_eq!(owed[1..5], u32::try_from(owed.len() - 1).unwrap().to_be_bytes());
        assert_eq!(owed[5..9], auth_code::SASL_FINAL.to_be_bytes());
        scram.finish(&owed[9..]).expect("the owed SASLFinal carries the server's signature");
    }
}
