//! TCP options sluice sets on its sockets.

use std::time::Duration;

/// Probes after the first, and how many go unanswered before the kernel drops the connection:
/// a peer that vanished is given up about a minute after the first probe.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_PROBES: u32 = 6;

/// Turn on TCP keepalive on `socket`, its first probe after `idle` without traffic. A client
/// whose machine or network vanished without a FIN, in an open transaction, held its server
/// connection and its locks for ever; a server connection to a host cut off the same way waited
/// until the monitor declared the node down. Set on a listener, the sockets it accepts inherit
/// it (Linux copies the option and its timing to each accepted socket): no call per client.
///
/// # Errors
/// The kernel refused one of the options.
pub fn keepalive<S: std::os::fd::AsFd>(socket: &S, idle: Duration) -> std::io::Result<()> {
    let keepalive =
        socket2::TcpKeepalive::new().with_time(idle).with_interval(KEEPALIVE_INTERVAL).with_retries(KEEPALIVE_PROBES);
    socket2::SockRef::from(socket).set_tcp_keepalive(&keepalive)
}
