//! Whether this process holds a listening socket on each configured port, read from the kernel
//! (`/proc/net/tcp{,6}` for listening sockets, `/proc/self/fd` for ours).
//!
//! Pingora binds listeners inside its services and, if a bind fails, only that service's
//! thread panics: the process (and this admin listener) can stay up without its proxy port.
//! Asking the kernel is exact, cheap (a probe reads a few small files) and, unlike connecting
//! to the port, does not show up as a failed handshake on a TLS listener.

use std::collections::HashSet;
use std::net::SocketAddr;

/// TCP state number of LISTEN in `/proc/net/tcp`.
const TCP_LISTEN: &str = "0A";

/// The addresses in `wanted` this process does not hold a listening socket for.
pub fn unbound(wanted: &[SocketAddr]) -> Vec<SocketAddr> {
    let ours = socket_inodes();
    let mut listening_ports = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            listening_ports.extend(listening(&text, &ours));
        }
    }
    wanted
        .iter()
        .filter(|addr| !listening_ports.contains(&addr.port()))
        .copied()
        .collect()
}

/// Inodes of the sockets among this process's file descriptors.
fn socket_inodes() -> HashSet<u64> {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return HashSet::new();
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?;
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// Local ports of the LISTEN sockets in one `/proc/net/tcp*` table whose inode is in `ours`.
fn listening(table: &str, ours: &HashSet<u64>) -> Vec<u16> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (cols.get(1)?, cols.get(3)?, cols.get(9)?);
            if *state != TCP_LISTEN || !ours.contains(&inode.parse().ok()?) {
                return None;
            }
            u16::from_str_radix(local.rsplit(':').next()?, 16).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_listener_is_found_and_a_free_port_is_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let bound = listener.local_addr().expect("addr");
        let free = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            probe.local_addr().expect("addr")
        };
        assert_eq!(unbound(&[bound, free]), [free]);
    }
}
