//! Which admin token the CLI sends to which node.
//!
//! In order, for the node at a URL:
//! 1. its line in the token map (`--tokens FILE`: `URL TOKEN` per line),
//!    for members with tokens of their own;
//! 2. the token of `--token-file FILE`, for every other node (one token for
//!    the cluster: every member's `admin.token.file` holds the same one);
//! 3. otherwise the token of the node whose home is the current directory,
//!    when that node is the one at the URL: a node writes `run/admin.json`
//!    when it starts (its admin URL and the token file it reads, whatever
//!    `admin.token.file` says), and it is followed whether that node runs
//!    now or not, only when this user owns it. To any other node, no token
//!    is sent from a node's home (it would be that node's, not the other
//!    one's). From a directory that is no node's home, `conf/admin.token`
//!    when it reads (a copy of the cluster's token, say).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::client::{read_token_file, ClientError};

/// What a running node writes to `run/admin.json`: where its admin API
/// listens and which token file it reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminEndpoint {
    /// The node process that wrote it.
    pub pid: u32,
    /// `http://ADDRESS:PORT` as bound (e.g. `http://0.0.0.0:9090`).
    pub url: String,
    /// The token file the node reads (absolute).
    pub token_file: PathBuf,
}

/// The largest token map read (a map lists members, one line each).
const MAX_MAP_BYTES: u64 = 64 * 1024;

impl AdminEndpoint {
    /// Writes `run/admin.json` of `home`.
    pub(super) fn write(&self, home: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        crate::atomic_file::replace(&crate::home::admin_file(home), &json, false)
    }

    /// The endpoint the node with home `home` wrote when it last ran,
    /// running or not; only from a file this user owns (one planted in a
    /// directory others can write to is not followed).
    pub fn read_any(home: &Path) -> Option<AdminEndpoint> {
        use std::os::unix::fs::MetadataExt;
        let file = crate::home::admin_file(home);
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if std::fs::symlink_metadata(&file).ok()?.uid() != me {
            return None;
        }
        let bytes = read_capped(&file, MAX_MAP_BYTES).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

fn read_capped(file: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(file)?.take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(std::io::Error::other(format!("it is larger than {cap} bytes")));
    }
    Ok(bytes)
}

/// A URL's host (lower-case, without brackets) and port (80 / 443 by default).
fn host_port(url: &str) -> Option<(String, u16)> {
    let (default, rest) = match url.trim() {
        u if u.starts_with("http://") => (80, &u[7..]),
        u if u.starts_with("https://") => (443, &u[8..]),
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default,
    };
    (!host.is_empty()).then(|| (host.to_ascii_lowercase(), port))
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether `a` and `b` name the same admin API: the same port, and the
/// same host, or both this machine's loopback (a node bound to every
/// address answers on loopback too).
pub fn same_node(a: &str, b: &str) -> bool {
    let (Some((ha, pa)), Some((hb, pb))) = (host_port(a), host_port(b)) else { return false };
    // A token listed for https:// never goes out over plain http://.
    let scheme = |u: &str| u.trim().starts_with("https://");
    if scheme(a) != scheme(b) {
        return false;
    }
    let local = |h: &str| is_loopback(h) || h == "0.0.0.0" || h == "::";
    pa == pb && (ha == hb || (local(&ha) && is_loopback(&hb)) || (is_loopback(&ha) && local(&hb)))
}

/// The tokens the CLI knows, by node (see the module doc for the order).
#[derive(Clone, Default)]
pub struct Tokens {
    /// `--tokens FILE`: (URL, token), in file order.
    map: Vec<(String, String)>,
    /// `--token-file FILE`: for every node not in the map.
    shared: Option<String>,
    /// Where the current directory's node would be found (tests set it).
    here: PathBuf,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the tokens themselves.
        let urls: Vec<&str> = self.map.iter().map(|(u, _)| u.as_str()).collect();
        f.debug_struct("Tokens").field("map", &urls).field("shared", &self.shared.is_some()).finish()
    }
}

impl Tokens {
    /// From `--token-file` and `--tokens` (each must read when given).
    pub fn load(token_file: Option<&Path>, map_file: Option<&Path>) -> Result<Tokens, ClientError> {
        let shared = token_file.map(read_token_file).transpose()?;
        let map = match map_file {
            Some(file) => read_map(file)?,
            None => Vec::new(),
        };
        Ok(Tokens { map, shared, here: PathBuf::from(".") })
    }

    /// As [`load`](Self::load), with `here` in place of the current directory.
    pub fn with_home(mut self, here: &Path) -> Tokens {
        self.here = here.to_owned();
        self
    }

    /// The token to send to the node at `url`, if any.
    pub fn for_url(&self, url: &str) -> Option<String> {
        if let Some((_, token)) = self.map.iter().find(|(u, _)| same_node(u, url)) {
            return Some(token.clone());
        }
        if let Some(token) = &self.shared {
            return Some(token.clone());
        }
        // The node whose home this is, running or stopped: its token goes
        // to it and to no other node.
        match AdminEndpoint::read_any(&self.here) {
            Some(endpoint) if same_node(&endpoint.url, url) => read_token_file(&endpoint.token_file).ok(),
            Some(_) => None,
            None => read_token_file(&self.here.join(crate::home::TOKEN_FILE)).ok(),
        }
    }
}

/// Reads a token map: `URL TOKEN` per line; `#` comments and blank lines
/// are skipped.
fn read_map(file: &Path) -> Result<Vec<(String, String)>, ClientError> {
    let failed = |detail: String| ClientError::TokenMap { file: file.to_owned(), detail };
    let bytes = read_capped(file, MAX_MAP_BYTES).map_err(|e| failed(e.to_string()))?;
    let text = String::from_utf8(bytes).map_err(|_| failed("it is not UTF-8 text".into()))?;
    let mut map = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(url), Some(token), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(failed(format!("line {} is not `URL TOKEN` (an admin URL, a space, its token)", n + 1)));
        };
        if host_port(url).is_none() {
            return Err(failed(format!(
                "line {}: {} is not an http:// or https:// URL with a host",
                n + 1,
                crate::text::clip_debug(url)
            )));
        }
        map.push((url.to_string(), token.to_string()));
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_same_node_by_port_and_loopback_host() {
        assert!(same_node("http://127.0.0.1:9090", "http://localhost:9090/"));
        assert!(same_node("http://0.0.0.0:9090", "http://127.0.0.1:9090"));
        assert!(same_node("http://[::1]:9090", "http://127.0.0.1:9090"));
        assert!(same_node("http://10.0.0.1:9090", "http://10.0.0.1:9090/api"));
        assert!(!same_node("http://127.0.0.1:9090", "http://127.0.0.1:9091"));
        assert!(!same_node("http://10.0.0.1:9090", "http://10.0.0.2:9090"));
        assert!(!same_node("http://0.0.0.0:9090", "http://10.0.0.2:9090"));
        assert!(same_node("http://node-a", "http://NODE-A:80"));
        assert!(!same_node("node-a:9090", "node-a:9090"), "not a URL");
    }

    #[test]
    fn the_map_wins_then_the_shared_token_then_the_node_here() {
        let dir = tempfile::tempdir().unwrap();
        let map = dir.path().join("tokens");
        std::fs::write(&map, "# members with their own token\nhttp://10.0.0.1:9090 t1\n\nhttp://10.0.0.2:9090  t2\n")
            .unwrap();
        let shared = dir.path().join("shared.token");
        std::fs::write(&shared, "cluster\n").unwrap();
        let here = dir.path().join("home");
        let tokens = Tokens::load(Some(&shared), Some(&map)).unwrap().with_home(&here);
        assert_eq!(tokens.for_url("http://10.0.0.1:9090/").as_deref(), Some("t1"));
        assert_eq!(tokens.for_url("http://10.0.0.2:9090").as_deref(), Some("t2"));
        assert_eq!(tokens.for_url("http://10.0.0.3:9090").as_deref(), Some("cluster"));
        assert!(!format!("{tokens:?}").contains("t1"), "Debug never shows a token");

        // Neither: the node whose home is here, when it is the one asked.
        std::fs::create_dir_all(here.join("conf")).unwrap();
        std::fs::create_dir_all(here.join("run")).unwrap();
        let own = dir.path().join("elsewhere.token");
        std::fs::write(&own, "mine\n").unwrap();
        std::fs::write(here.join("conf/admin.token"), "copy\n").unwrap();
        let none = Tokens::load(None, None).unwrap().with_home(&here);
        assert_eq!(none.for_url("http://127.0.0.1:9090").as_deref(), Some("copy"), "no node runs here");
        let endpoint =
            AdminEndpoint { pid: std::process::id(), url: "http://127.0.0.1:9090".into(), token_file: own.clone() };
        endpoint.write(&here).unwrap();
        assert_eq!(none.for_url("http://localhost:9090").as_deref(), Some("mine"), "the file the node reads");
        assert_eq!(none.for_url("http://127.0.0.1:9091"), None, "another node: not this node's token");
    }

    #[test]
    fn a_malformed_map_names_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let map = dir.path().join("tokens");
        std::fs::write(&map, "http://10.0.0.1:9090 t1\nhttp://10.0.0.2:9090\n").unwrap();
        let e = Tokens::load(None, Some(&map)).unwrap_err().to_string();
        assert!(e.contains("tokens") && e.contains("line 2 is not `URL TOKEN`"), "{e}");
        std::fs::write(&map, "10.0.0.1:9090 t1\n").unwrap();
        let e = Tokens::load(None, Some(&map)).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("is not an http://"), "{e}");
        std::fs::write(&map, vec![b'#'; 70 * 1024]).unwrap();
        assert!(Tokens::load(None, Some(&map)).unwrap_err().to_string().contains("larger than"));
    }
}
