//! `clusterhost cluster`: the running node's clustering through its admin
//! API: status, switched on and off, and the strategy plugin upgraded.

use std::process::ExitCode;

use super::render::print_cluster;
use super::{api, fail, AdminTarget};
use crate::admin::contract::ClusterView;
use crate::upgrade;

/// `cluster status`.
pub fn status(admin: &AdminTarget) -> ExitCode {
    api(
        admin,
        |c| c.get("/api/cluster"),
        |answer| {
            print_cluster(&answer.view::<ClusterView>()?);
            Ok(())
        },
    )
}

/// `cluster enable` / `cluster disable`, on every member.
pub fn switch(admin: &AdminTarget, enabled: bool) -> ExitCode {
    let (path, done) = if enabled {
        ("/api/cluster/enable", "clustering enabled cluster-wide")
    } else {
        ("/api/cluster/disable", "clustering disabled cluster-wide")
    };
    api(
        admin,
        |c| c.post(path, b""),
        |_| {
            println!("{done}");
            Ok(())
        },
    )
}

/// `cluster upgrade`: `options` without the tokens, which come from `admin`;
/// `nodes` empty means `--admin` alone. Progress goes to stdout line by line.
pub fn upgrade(admin: &AdminTarget, mut options: upgrade::UpgradeOptions) -> ExitCode {
    options.tokens = match admin.tokens() {
        Ok(tokens) => tokens,
        Err(e) => return fail(e.to_string()),
    };
    if options.nodes.is_empty() {
        options.nodes = vec![admin.url.clone()];
    }
    let mut out = |line: &str| {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    };
    match upgrade::run(&options, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e.to_string()),
    }
}
