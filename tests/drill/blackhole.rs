//! A TCP forwarder in front of one server that can start dropping everything: after
//! [`Forwarder::blackhole`] it still accepts connections and reads what it is sent, but
//! forwards nothing and answers nothing, in either direction, on old and new connections alike.
//! To a client this is a server whose packets are dropped: connects and queries time out, no
//! connection is refused or reset. Needs no privileges (unlike a `tc` filter or a network
//! namespace); listens on another loopback address with the server's own port, so the node's
//! configured port still matches the port its replicas stream from.

use std::net::SocketAddr;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// A running forwarder; dropping it stops it and closes every connection.
pub struct Forwarder {
    addr: SocketAddr,
    dropping: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Forwarder {
    /// Forward `listen` to `upstream`.
    pub async fn start(listen: SocketAddr, upstream: SocketAddr) -> Forwarder {
        let listener = TcpListener::bind(listen).await.unwrap_or_else(|e| panic!("cannot listen on {listen}: {e}"));
        let addr = listener.local_addr().expect("a bound address");
        let (dropping, rx) = watch::channel(false);
        let task = tokio::spawn(accept(listener, upstream, rx));
        Forwarder { addr, dropping, task }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on forward nothing.
    pub fn blackhole(&self) {
        let _ = self.dropping.send(true);
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, upstream: SocketAddr, dropping: watch::Receiver<bool>) {
    // Owned here: aborting the accept task drops the set, which aborts every connection.
    let mut connections = JoinSet::new();
    while let Ok((client, _)) = listener.accept().await {
        connections.spawn(relay(client, upstream, dropping.clone()));
    }
}

async fn relay(mut client: TcpStream, upstream: SocketAddr, mut dropping: watch::Receiver<bool>) {
    if !*dropping.borrow() {
        let Ok(mut server) = TcpStream::connect(upstream).await else { return };
        let blackholed = tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
            _ = dropping.wait_for(|d| *d) => true,
        };
        if !blackholed {
            return;
        }
        // Keep the server side open too: it must not see a goodbye either.
        swallow(client).await;
        drop(server);
        return;
    }
    swallow(client).await;
}

/// Read and discard until the peer gives up.
async fn swallow(mut socket: TcpStream) {
    let mut buf = [0u8; 4096];
    while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
}
