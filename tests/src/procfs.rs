//! What a process holds, read from Linux's /proc: open file descriptors,
//! threads, resident memory, CPU time and established TCP connections. The resource
//! tests and the bench's soak count these before and after upgrades and
//! re-joins.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

/// What one process holds at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Open file descriptors (/proc/PID/fd).
    pub fds: usize,
    /// Threads (/proc/PID/task).
    pub threads: usize,
    /// Resident memory, KiB (VmRSS).
    pub rss_kib: u64,
    /// Of which anonymous (RssAnon: heap, stacks), KiB; the rest is mostly
    /// file-backed pages of mapped libraries.
    pub anon_kib: u64,
}

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} fds, {} threads, {} KiB resident ({} KiB anonymous)",
            self.fds, self.threads, self.rss_kib, self.anon_kib
        )
    }
}

/// The usage of process `pid`; panics when it does not run.
pub fn usage(pid: u32) -> Usage {
    let count = |dir: &str| {
        std::fs::read_dir(format!("/proc/{pid}/{dir}"))
            .unwrap_or_else(|e| panic!("/proc/{pid}/{dir} is readable (is the process running?): {e}"))
            .count()
    };
    Usage {
        fds: count("fd"),
        threads: count("task"),
        rss_kib: status_kib(pid, "VmRSS"),
        anon_kib: status_kib(pid, "RssAnon"),
    }
}

/// Line `field` of /proc/PID/status, in KiB (e.g. `VmRSS`).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status is readable");
    let prefix = format!("{field}:");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("/proc/{pid}/status has a {field} line"))
}

/// CPU time (user + system) process `pid` used so far; panics when it does not run.
pub fn cpu_time(pid: u32) -> std::time::Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/stat is readable (is the process running?): {e}"));
    // Fields after the command name (in parentheses, which may hold spaces).
    let rest = &stat[stat.rfind(')').expect("/proc/PID/stat has a command name") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize, name: &str| -> u64 {
        fields.get(i).and_then(|f| f.parse().ok()).unwrap_or_else(|| panic!("/proc/{pid}/stat has {name}"))
    };
    let ticks = field(11, "utime") + field(12, "stime");
    // In USER_HZ, which Linux fixes at 100 for /proc on every architecture it runs on here.
    std::time::Duration::from_millis(ticks * 10)
}

/// One established TCP connection of a process, IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLink {
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

/// The socket inodes process `pid` has open.
fn socket_inodes(pid: u32) -> HashSet<u64> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return HashSet::new() };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            target.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// `0100007F:1F90` (little-endian hex address, hex port) as an address.
fn parse_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let ip = u32::from_str_radix(ip, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(u32::from_be(ip)), port)))
}

/// The established IPv4 TCP connections process `pid` holds.
pub fn tcp_links(pid: u32) -> Vec<TcpLink> {
    let inodes = socket_inodes(pid);
    // The process's own view of the table (its network namespace).
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            let (local, remote, state, inode) = (fields.get(1)?, fields.get(2)?, fields.get(3)?, fields.get(9)?);
            // 01: ESTABLISHED.
            if *state != "01" || !inodes.contains(&inode.parse().ok()?) {
                return None;
            }
            Some(TcpLink { local: parse_addr(local)?, remote: parse_addr(remote)? })
        })
        .collect()
}

/// The connections of `pid` on a member port: accepted on its own
/// `own_port`, or made to `peer_port`.
pub fn member_links(pid: u32, own_port: u16, peer_port: u16) -> Vec<TcpLink> {
    tcp_links(pid).into_iter().filter(|l| l.local.port() == own_port || l.remote.port() == peer_port).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_sees_its_own_connection_and_descriptors() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let before = usage(std::process::id());
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (server, _) = listener.accept().unwrap();
        let after = usage(std::process::id());
        assert!(after.fds >= before.fds + 2, "{before} then {after}");
        let links = member_links(std::process::id(), port, 1);
        assert_eq!(links.len(), 1, "{links:?}");
        assert_eq!(links[0].remote, client.local_addr().unwrap());
        drop((client, server));
        assert!(after.threads >= 1 && after.rss_kib > 0);
    }
}
