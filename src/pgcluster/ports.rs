//! Free TCP ports on 127.0.0.1 for servers and proxies started by tests.
//!
//! Ports are picked at random in a range below the Linux ephemeral range (32768+), so an
//! outgoing connection of some other test cannot be sitting on them. A test bind only proves
//! the port was free a moment ago: callers that start a server retry on a clash.

use std::net::{Ipv4Addr, TcpListener};

use rand::Rng;

use super::error::ClusterError;

/// The range ports are drawn from (end exclusive).
pub const PORT_RANGE: std::ops::Range<u16> = 20000..32000;

/// Attempts before giving up.
const ATTEMPTS: u32 = 200;

/// A port on 127.0.0.1 that was free when checked.
///
/// # Errors
/// [`ClusterError::NoFreePort`] after 200 occupied candidates.
pub fn free_port() -> Result<u16, ClusterError> {
    let mut rng = rand::thread_rng();
    for _ in 0..ATTEMPTS {
        let port = rng.gen_range(PORT_RANGE);
        if port_is_free(port) {
            return Ok(port);
        }
    }
    Err(ClusterError::NoFreePort { attempts: ATTEMPTS })
}

/// True if `port` can be bound on 127.0.0.1 right now.
#[must_use]
pub fn port_is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_in_range_and_bindable() {
        for _ in 0..20 {
            let p = free_port().unwrap();
            assert!(PORT_RANGE.contains(&p));
        }
    }

    #[test]
    fn a_bound_port_is_not_free() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        assert!(!port_is_free(l.local_addr().unwrap().port()));
    }
}
