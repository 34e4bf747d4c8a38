//! Redis servers the tests start for themselves: one `redis-server` on a
//! free loopback port, a master with a replica watched by a Sentinel, or a
//! 3-master Redis Cluster made with `redis-cli --cluster create`. Dropping
//! one stops its processes.
//! `.ci/run` installs `redis-server` and `redis-tools` when missing.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port free on 127.0.0.1 whose cluster-bus port (+10000) is free too,
/// both below the ephemeral range (see [`crate::free_port_in`]).
pub fn free_redis_port() -> u16 {
    let free = |port: u16| TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok();
    crate::free_port_in(10_000..16_000, |port| free(port) && free(port + 10_000))
}

fn require(tool: &str) {
    let found = Command::new("sh").arg("-c").arg(format!("command -v {tool}")).stdout(Stdio::null()).status();
    assert!(
        found.is_ok_and(|s| s.success()),
        "{tool} is not installed: the redis strategy's tests start their own servers; install it (apt-get install -y redis-server redis-tools), as .ci/run does"
    );
}

/// One `redis-server` process.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    args: Vec<String>,
    /// A Sentinel: `args` are lines of its configuration file.
    sentinel: bool,
}

impl RedisServer {
    /// A server without persistence (like a cache deployment) on a free port.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// A server with extra `redis-server` arguments (e.g. `--appendonly yes`).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        RedisServer::start_on(free_redis_port(), extra)
    }

    /// A server on `port` (free, chosen by the test).
    pub fn start_on(port: u16, extra: &[&str]) -> RedisServer {
        require("redis-server");
        let dir = tempfile::tempdir().expect("a server directory");
        let mut args: Vec<String> =
            ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "no"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut server = RedisServer { port, child: None, dir, args, sentinel: false };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join(format!("redis-{}.log", self.port))).expect("a log file");
        let mut command = Command::new("redis-server");
        if self.sentinel {
            // A sentinel rewrites its configuration file: it gets its own.
            let conf = self.dir.path().join("sentinel.conf");
            let text = format!("port {}\nbind 127.0.0.1\n{}\n", self.port, self.args.join("\n"));
            std::fs::write(&conf, text).expect("the sentinel's configuration");
            command.arg(&conf).arg("--sentinel");
        } else {
            command.arg("--port").arg(self.port.to_string()).arg("--dir").arg(self.dir.path()).args(&self.args);
        }
        let child =
            command.stdout(log.try_clone().expect("the log file")).stderr(log).spawn().expect("redis-server starts");
        self.child = Some(child);
        wait_ping(self.port, &self.log_path());
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("redis-{}.log", self.port))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: no save, no goodbye).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Runs one command with `redis-cli`, returning its output.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }

    /// The fields of every hash whose key matches `pattern` on this server
    /// (e.g. the entries of a spread cache's partitions: `P:cache:NAME:*`).
    pub fn hash_fields(&self, pattern: &str) -> u64 {
        let keys = self.cli(&["--scan", "--pattern", pattern]);
        keys.lines()
            .filter(|k| !k.trim().is_empty())
            .map(|k| self.cli(&["HLEN", k.trim()]).trim().parse::<u64>().expect("HLEN answers a number"))
            .sum()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `redis-cli -p port args...`.
pub fn cli(port: u16, args: &[&str]) -> String {
    require("redis-cli");
    let out = Command::new("redis-cli")
        .arg("-h")
        .arg("127.0.0.1")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Waits until the server on `port` answers PING (10 s).
fn wait_ping(port: u16, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
            let mut reply = [0u8; 7];
            if stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
            {
                return;
            }
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("redis-server on port {port} did not answer PING within 10 s; its log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A master, its replica, and one Sentinel watching them as `mymaster`
/// (quorum 1, down after 1 s).
pub struct RedisSentinel {
    pub master: RedisServer,
    pub replica: RedisServer,
    pub sentinel: RedisServer,
}

impl RedisSentinel {
    pub fn start() -> RedisSentinel {
        let master = RedisServer::start();
        let master_port = master.port.to_string();
        let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &master_port]);
        let config = [
            format!("sentinel monitor mymaster 127.0.0.1 {master_port} 1"),
            "sentinel down-after-milliseconds mymaster 1000".to_string(),
            "sentinel failover-timeout mymaster 5000".to_string(),
        ];
        let dir = tempfile::tempdir().expect("a sentinel directory");
        let mut sentinel =
            RedisServer { port: free_redis_port(), child: None, dir, args: config.to_vec(), sentinel: true };
        sentinel.spawn();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !sentinel.cli(&["SENTINEL", "get-master-addr-by-name", "mymaster"]).contains(&master_port)
            || !replica.cli(&["INFO", "replication"]).contains("master_link_status:up")
        {
            assert!(Instant::now() < deadline, "the Sentinel or the replica did not come up in 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        RedisSentinel { master, replica, sentinel }
    }

    /// The port Sentinel names as master now.
    pub fn master_port(&self) -> Option<u16> {
        let out = self.sentinel.cli(&["SENTINEL", "get-master-addr-by-name", "mymaster"]);
        out.lines().nth(1).and_then(|p| p.trim().parse().ok())
    }
}

/// A 3-master Redis Cluster on loopback.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        require("redis-cli");
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| RedisServer::start_with(&["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]))
            .collect();
        let addresses: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let mut args: Vec<&str> = vec!["--cluster", "create"];
        args.extend(addresses.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        let out = cli(nodes[0].port, &args);
        assert!(out.contains("[OK] All 16384 slots covered"), "redis-cli --cluster create failed:\n{out}");
        // Every node must agree the cluster is up before clients use it.
        let deadline = Instant::now() + Duration::from_secs(20);
        for node in &nodes {
            while !node.cli(&["cluster", "info"]).contains("cluster_state:ok") {
                assert!(Instant::now() < deadline, "the Redis Cluster did not reach cluster_state:ok in 20 s");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        RedisCluster { nodes }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}
