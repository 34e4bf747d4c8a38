//! Hot upgrade of the gossip strategy on one member of a 3-process cluster
//! under client load: how long until the new version is active and back in
//! the cluster, and the longest stall the clients saw meanwhile.

use std::path::PathBuf;
use std::time::Duration;

use clusterhost_tests::upgrade::{members_seen, ClientLoad, GossipCluster};
use clusterhost_tests::{plugin, restamp, wait_until};
use semver::Version;

use super::drop_active::wait_for_line;
use super::{Ctx, Scenario};
use crate::figure::Unit;
use crate::report::Report;

/// Pause between a client's requests (each client: a write, then a read back).
const PAUSE: Duration = Duration::from_millis(2);

pub struct UpgradeUnderLoad;

impl Scenario for UpgradeUnderLoad {
    fn name(&self) -> &'static str {
        "upgrade-under-load"
    }

    fn about(&self) -> &'static str {
        "3 `clusterhost run` processes on gossip; one client thread per member writes a key and reads it back \
         through that member's admin API every 2 ms. One member at a time gets a newer build dropped into its \
         plugins/ (write, then rename): timed from the rename to the new version active, and to the member \
         re-joined; the longest stall is the longest time any client went without a served request, over a \
         window from 300 ms before the rename to 300 ms after every member sees 3 members again."
    }

    fn run(&self, ctx: &Ctx, report: &mut Report) {
        let upgrades = ctx.pick(9, 1);
        let built = plugin("gossip");
        let builds: Vec<PathBuf> = (0..=upgrades)
            .map(|n| {
                let path = ctx.work.join(format!("gossip-0.2.{n}.so"));
                restamp(&built, &path, |m| m.version = Version::new(0, 2, n as u64));
                path
            })
            .collect();
        let dir = tempfile::tempdir_in(ctx.work).expect("a scratch directory");
        let cluster = GossipCluster::start(3, &builds[0], dir);
        let urls: Vec<String> = cluster.nodes.iter().map(|n| n.admin_url()).collect();
        let (mut active, mut rejoined, mut stalls, mut served, mut failed_others, mut failed_upgraded) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (i, build) in builds[1..].iter().enumerate() {
            let member = i % cluster.nodes.len();
            let node = &cluster.nodes[member];
            let load = ClientLoad::start(&urls, "bench", PAUSE, u64::MAX);
            std::thread::sleep(Duration::from_millis(300));
            let plugins = node.home.join("plugins");
            let tmp = plugins.join(".gossip.so.tmp");
            std::fs::copy(build, &tmp).expect("the new build can be written");
            let mark = node.log_len();
            let renamed = std::time::Instant::now();
            std::fs::rename(&tmp, plugins.join("gossip.so")).expect("the rename succeeds");
            let version = format!("0.2.{}", i + 1);
            let now_active = wait_for_line(node, mark, &["state=active", "gossip", &version]);
            let joined = wait_for_line(node, mark, &["joined the cluster"]);
            wait_until("every member to see 3 members again", Duration::from_secs(30), || {
                cluster.nodes.iter().all(|n| members_seen(n) == 3)
            });
            std::thread::sleep(Duration::from_millis(300));
            let seen = load.finish();
            active.push(now_active - renamed);
            rejoined.push(joined - renamed);
            stalls.push(seen.longest_stall);
            served.push(seen.served as f64);
            let others: u64 =
                seen.failed_by_member.iter().enumerate().filter(|(m, _)| *m != member).map(|(_, n)| n).sum();
            failed_others.push(others as f64);
            failed_upgraded.push(seen.failed_by_member[member] as f64);
        }
        drop(cluster);
        report.add_durations(
            "upgrade_load.active",
            "drop of a newer build → new version active",
            Unit::Millis,
            &active,
            "per upgrade",
        );
        report.add_durations(
            "upgrade_load.rejoined",
            "drop of a newer build → member re-joined",
            Unit::Millis,
            &rejoined,
            "per upgrade",
        );
        report.add_durations(
            "upgrade_load.stall",
            "longest request stall during the upgrade",
            Unit::Millis,
            &stalls,
            "per upgrade, any client",
        );
        report.add(
            "upgrade_load.served",
            "requests served in the window",
            Unit::Count,
            &served,
            "per upgrade, 3 clients",
        );
        report.add(
            "upgrade_load.failed_others",
            "failed requests on members not being upgraded",
            Unit::Count,
            &failed_others,
            "per upgrade",
        );
        report.add(
            "upgrade_load.failed_upgraded",
            "failed requests on the member being upgraded",
            Unit::Count,
            &failed_upgraded,
            "per upgrade",
        );
    }
}
