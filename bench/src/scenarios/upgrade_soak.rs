//! Many hot upgrades of a running node (issue 24): what each one leaves
//! behind in the `clusterhost run` process, in file descriptors, threads
//! and resident memory, for `hello`, the gossip strategy (re-joining a
//! second member each time) and the redis strategy (against its own
//! `redis-server`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clusterhost_tests::admin::{active_version, call, member_home, publish_file};
use clusterhost_tests::cluster::{free_member_port, loopback_members, write_gossip_conf, write_redis_conf};
use clusterhost_tests::procfs::{usage, Usage};
use clusterhost_tests::redis::RedisServer;
use clusterhost_tests::{plugin, restamped_versions, wait_until, NodeProcess};

use super::{Ctx, Scenario};
use crate::figure::Unit;
use crate::report::Report;

const DEADLINE: Duration = Duration::from_secs(60);

/// How long after an upgrade the counts are read: a retired runtime's
/// threads exit in the background.
const SETTLE: Duration = Duration::from_millis(500);

pub struct UpgradeSoak;

/// The plugins a series upgrades: (library, id, file in plugins/).
const KINDS: [(&str, &str, &str); 3] =
    [("hello", "hello", "hello.so"), ("gossip", "gossip", "gossip.so"), ("redis_strategy", "redis", "redis.so")];

impl Scenario for UpgradeSoak {
    fn name(&self) -> &'static str {
        "upgrade-soak"
    }

    fn about(&self) -> &'static str {
        "Hot upgrades of a running `clusterhost run` node: plugins/NAME.so replaced by restamped builds (write, then \
         rename), each time waiting for the new version to be active and, for a strategy, for the node to be \
         clustered again (gossip re-joining a second member, redis on its own redis-server). After one warm-up \
         upgrade, per upgrade: open file descriptors, threads and resident memory (VmRSS) of the node added, read \
         from /proc 500 ms after it is back."
    }

    fn run(&self, ctx: &Ctx, report: &mut Report) {
        let upgrades = ctx.pick(200, 3);
        for (lib, id, file) in KINDS {
            let built = plugin(lib);
            let kib = std::fs::metadata(&built).map(|m| m.len() / 1024).unwrap_or(0);
            let builds = restamped_versions(&built, &ctx.work.join("builds"), lib, upgrades + 2);
            let series = Series::start(lib, file, &builds[0].0);
            series.upgrade(id, file, &builds[1]);
            std::thread::sleep(SETTLE);
            let first = usage(series.node.pid());
            let mut before = first;
            let (mut fds, mut threads, mut rss, mut anon) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let started = Instant::now();
            for build in &builds[2..] {
                series.upgrade(id, file, build);
                std::thread::sleep(SETTLE);
                let after = usage(series.node.pid());
                fds.push(after.fds as f64 - before.fds as f64);
                threads.push(after.threads as f64 - before.threads as f64);
                rss.push(after.rss_kib as f64 - before.rss_kib as f64);
                anon.push(after.anon_kib as f64 - before.anon_kib as f64);
                before = after;
            }
            let took = started.elapsed();
            let per = |a: f64, b: f64| (b - a) / upgrades as f64;
            let note = |what: &str, a: f64, b: f64| {
                format!(
                    "{what} {a:.0} → {b:.0} over {upgrades} upgrades ({:+.2} per upgrade); {kib} KiB plugin; {:.1} s in all",
                    per(a, b),
                    took.as_secs_f64()
                )
            };
            report.add(
                &format!("soak.{id}.fds"),
                &format!("file descriptors added per hot upgrade, {id}, running node"),
                Unit::Count,
                &fds,
                &note("fds", first.fds as f64, before.fds as f64),
            );
            report.add(
                &format!("soak.{id}.threads"),
                &format!("threads added per hot upgrade, {id}, running node"),
                Unit::Count,
                &threads,
                &note("threads", first.threads as f64, before.threads as f64),
            );
            report.add(
                &format!("soak.{id}.rss"),
                &format!("resident memory added per hot upgrade, {id}, running node"),
                Unit::KiB,
                &rss,
                &note("VmRSS KiB", first.rss_kib as f64, before.rss_kib as f64),
            );
            report.add(
                &format!("soak.{id}.anon"),
                &format!("of which anonymous (heap, stacks), {id}"),
                Unit::KiB,
                &anon,
                &note("RssAnon KiB", first.anon_kib as f64, before.anon_kib as f64),
            );
            print_usage(id, first, before);
        }
    }
}

fn print_usage(id: &str, first: Usage, last: Usage) {
    println!("  {id}: after the warm-up upgrade {first}; at the end {last}");
}

/// One series: the node being upgraded, and what it clusters with.
struct Series {
    node: NodeProcess,
    _home: tempfile::TempDir,
    /// For gossip: the second member (its home too).
    _peer: Option<(NodeProcess, tempfile::TempDir)>,
    _redis: Option<RedisServer>,
    /// Whether the node must be clustered again after each upgrade, and with how many members.
    members: Option<usize>,
}

impl Series {
    fn start(lib: &str, file: &str, first: &Path) -> Series {
        match lib {
            "gossip" => {
                let cluster = format!("soak-{}", std::process::id());
                let key = "5a".repeat(32);
                let a = free_member_port();
                let mut b = free_member_port();
                while b == a {
                    b = free_member_port();
                }
                let members = loopback_members(&[a, b]);
                let conf = |conf: &Path| write_gossip_conf(conf, &cluster, &key, &members, false);
                let peer_home = member_home(&plugin("gossip"), "gossip.so", conf);
                let peer = start_node(peer_home.path(), "soak-peer", Some(b));
                let home = member_home(first, file, conf);
                let node = start_node(home.path(), "soak-node", Some(a));
                let series =
                    Series { node, _home: home, _peer: Some((peer, peer_home)), _redis: None, members: Some(2) };
                series.wait_clustered();
                series
            }
            "redis_strategy" => {
                let server = RedisServer::start();
                let prefix = format!("soak{}", std::process::id());
                let home = member_home(first, file, |conf| write_redis_conf(conf, "single", &[server.url()], &prefix));
                let node = start_node(home.path(), "soak-node", None);
                let series = Series { node, _home: home, _peer: None, _redis: Some(server), members: Some(1) };
                series.wait_clustered();
                series
            }
            _ => {
                let home = member_home(first, file, |_| {});
                let node = start_node(home.path(), "soak-node", None);
                node.wait_for_admin(DEADLINE);
                Series { node, _home: home, _peer: None, _redis: None, members: None }
            }
        }
    }

    /// Publishes `build` and waits until it is active (and clustered again).
    fn upgrade(&self, id: &str, file: &str, (path, version): &(PathBuf, String)) {
        publish_file(&self.node.home, path, file);
        let url = self.node.admin_url();
        wait_until(&format!("{id} {version} to be active"), DEADLINE, || {
            active_version(&url, id).as_deref() == Some(version.as_str())
        });
        self.wait_clustered();
    }

    fn wait_clustered(&self) {
        let Some(members) = self.members else { return };
        let url = format!("{}/api/cluster", self.node.admin_url());
        wait_until(&format!("the node to be clustered with {members} members"), DEADLINE, || {
            let (status, body) = call("GET", &url, None, None);
            status == 200
                && body["state"]["state"] == "clustered"
                && body["members"].as_array().is_some_and(|m| m.len() == members)
        });
    }
}

fn start_node(home: &Path, name: &str, port: Option<u16>) -> NodeProcess {
    let port = port.map(|p| p.to_string());
    let mut args = vec!["--node-name", name, "--bind", "127.0.0.1"];
    if let Some(port) = &port {
        args.extend(["--cluster-port", port.as_str()]);
    }
    let node = NodeProcess::start_with(home, &args, &[]);
    node.wait_for_admin(DEADLINE);
    node
}
