//! Network namespaces for tests and benchmarks that need real links (root
//! only): a "switch" namespace with a bridge and one namespace per member,
//! linked by veth pairs, with addresses in a private subnet that exists only
//! inside these namespaces. Every namespace is deleted by its guard, also on
//! panic; ones left by killed processes are swept at the next start.

use std::path::Path;
use std::process::Command;

/// Runs `ip ARGS`; panics with its stderr when it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip can be run");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// Why network namespaces cannot be made here, or `None` when they can.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid(2) has no arguments, cannot fail and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        return Some("it needs root (network namespaces and veth links)".to_string());
    }
    match Command::new("ip").args(["netns", "list"]).output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!("`ip netns list` failed: {}", String::from_utf8_lossy(&out.stderr).trim())),
        Err(e) => Some(format!("the `ip` command (iproute2) cannot be run: {e}")),
    }
}

/// Namespaces one test made; deleted on drop (their links go with them).
pub struct Lab {
    pub switch: Option<String>,
    pub members: Vec<String>,
    /// The first three octets of the members' addresses, e.g. "10.213.0".
    subnet: String,
}

impl Lab {
    /// A switch namespace with a bridge and `n` member namespaces linked to
    /// it; member i has SUBNET.(11+i)/24 on its `eth0`, and multicast routed
    /// there. Names are `PREFIX-PID-TAG-*`: PREFIX belongs to the caller.
    pub fn new(prefix: &str, subnet: &str, tag: &str, n: usize) -> Lab {
        remove_stale_namespaces(prefix);
        let base = format!("{prefix}-{}-{tag}", std::process::id());
        let switch = format!("{base}-sw");
        ip(&["netns", "add", &switch]);
        let mut lab = Lab { switch: Some(switch.clone()), members: Vec::new(), subnet: subnet.to_string() };
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0"]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);
        for i in 0..n {
            let ns = format!("{base}-{i}");
            ip(&["netns", "add", &ns]);
            lab.members.push(ns.clone());
            let port = format!("p{i}");
            ip(&["-n", &switch, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
            ip(&["-n", &switch, "link", "set", &port, "master", "br0"]);
            ip(&["-n", &switch, "link", "set", &port, "up"]);
            ip(&["-n", &ns, "addr", "add", &format!("{}/24", lab.address(i)), "dev", "eth0"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "route", "add", "224.0.0.0/4", "dev", "eth0"]);
        }
        lab
    }

    /// One namespace with only its loopback up: whatever runs inside it is
    /// the only traffic its `lo` counters see.
    pub fn isolated(prefix: &str, tag: &str) -> Lab {
        remove_stale_namespaces(prefix);
        let ns = format!("{prefix}-{}-{tag}", std::process::id());
        ip(&["netns", "add", &ns]);
        let lab = Lab { switch: None, members: vec![ns.clone()], subnet: String::new() };
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        lab
    }

    /// Member i's address.
    pub fn address(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, 11 + i)
    }

    /// Member i's link to the switch, down (cut off) or up.
    pub fn link(&self, i: usize, up: bool) {
        ip(&["-n", &self.members[i], "link", "set", "eth0", if up { "up" } else { "down" }]);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.members.iter().chain(self.switch.iter()) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Deletes namespaces named `PREFIX-PID-*` left by processes that no longer
/// run (killed before their guard could clean up). Only names with PREFIX.
pub fn remove_stale_namespaces(prefix: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix(&format!("{prefix}-")) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// Runs `f` on a thread that has entered network namespace `ns` (sockets it
/// opens live there, e.g. to reach a member's admin API on the namespace's
/// own 127.0.0.1); returns its result.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path} cannot be opened: {e}"));
                use std::os::fd::AsRawFd;
                // Only this thread changes namespace (a network namespace is per thread).
                // SAFETY: setns(2) on a descriptor `file` keeps open for the call;
                // it changes this thread's namespace only, no memory of ours.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns into {ns} failed: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
