//! HAProxy (the backend of docs/load-balancing.md) in front of 3 gossip
//! members under a client loop: requests failed through it during rolling
//! upgrades, and how long a SIGKILLed member keeps getting requests.

use clusterhost_tests::haproxy::{Balanced, Haproxy};
use clusterhost_tests::upgrade::gossip_build;

use super::{Ctx, Scenario};
use crate::figure::Unit;
use crate::report::Report;

pub struct LoadBalancer;

impl Scenario for LoadBalancer {
    fn name(&self) -> &'static str {
        "load-balancer"
    }

    fn about(&self) -> &'static str {
        "HAProxy with the documented backend (`option httpchk GET /readyz`, `inter 1s fall 2 rise 2`, `retries 1`, \
         `option redispatch 1`) in front of 3 `clusterhost run` processes on gossip; a client writes a new key and \
         reads a known one back through HAProxy every 10 ms. Rolling upgrades with `clusterhost cluster upgrade \
         --mode rolling` (default `--drain 3`): requests failed through HAProxy while each ran. Then a member is \
         SIGKILLed (and restarted) several times: the time until HAProxy's stats show it DOWN and the requests \
         that reached no member meanwhile; the time until gossip drops it from every survivor's view and the \
         writes the members refused meanwhile (a write waits for every member's acknowledgement)."
    }

    fn run(&self, ctx: &Ctx, report: &mut Report) {
        if let Err(why) = Haproxy::available() {
            for (id, label, unit) in [
                ("lb.upgrade.failed", "requests failed through HAProxy during a rolling upgrade", Unit::Count),
                ("lb.kill.down", "SIGKILL → HAProxy marks the member down", Unit::Seconds),
            ] {
                report.not_measured(id, label, unit, &why);
            }
            return;
        }
        let (upgrades, kills) = ctx.pick((3, 5), (0, 1));
        let dir = tempfile::tempdir_in(ctx.work).expect("a scratch directory");
        let builds: Vec<_> = (0..=upgrades)
            .map(|n| {
                let version = format!("0.{}.0", n + 1);
                (gossip_build(&ctx.work.join(format!("gossip-{version}.so")), &version, "1.0"), version)
            })
            .collect();
        let haproxy_dir = ctx.work.join("haproxy");
        std::fs::create_dir_all(&haproxy_dir).expect("a scratch directory");
        let mut balanced = Balanced::start(&builds[0].0, dir, &haproxy_dir);
        let mut failed = Vec::new();
        for pair in builds.windows(2) {
            let ((from, _), (to, version)) = (&pair[0], &pair[1]);
            failed.push(balanced.rolling_upgrade(to, from, version).0.len() as f64);
        }
        let killed: Vec<_> = (0..kills).map(|_| balanced.kill(1)).collect();
        balanced.client.finish();
        if failed.is_empty() {
            report.not_measured(
                "lb.upgrade.failed",
                "requests failed through HAProxy during a rolling upgrade",
                Unit::Count,
                "not in quick mode (a rolling upgrade of 3 members takes about 20 s)",
            );
        } else {
            report.add(
                "lb.upgrade.failed",
                "requests failed through HAProxy during a rolling upgrade",
                Unit::Count,
                &failed,
                "3 members, per upgrade (~3,000 requests each)",
            );
        }
        let durations = |f: fn(&clusterhost_tests::haproxy::Killed) -> std::time::Duration| {
            killed.iter().map(f).collect::<Vec<_>>()
        };
        let counts = |f: fn(&clusterhost_tests::haproxy::Killed) -> usize| {
            killed.iter().map(|k| f(k) as f64).collect::<Vec<_>>()
        };
        report.add_durations(
            "lb.kill.down",
            "SIGKILL → HAProxy marks the member down",
            Unit::Seconds,
            &durations(|k| k.to_down),
            "inter 1s fall 2, per kill",
        );
        report.add(
            "lb.kill.balancer_failed",
            "requests that reached no member until then",
            Unit::Count,
            &counts(|k| k.by_balancer.len()),
            "per kill; retries 1 + option redispatch 1",
        );
        report.add_durations(
            "lb.kill.dropped",
            "SIGKILL → gossip drops the member on every survivor",
            Unit::Seconds,
            &durations(|k| k.to_dropped),
            "per kill",
        );
        report.add(
            "lb.kill.member_refused",
            "writes refused by the members until then",
            Unit::Count,
            &counts(|k| k.by_members.len()),
            "per kill; a write waits for every member's acknowledgement",
        );
    }
}
