//! What an upgrade will do, printed before it does it (and alone with
//! `--dry-run`); and the offline flow, which is only a runbook.

use super::survey::{Member, PluginFile};
use super::{Mode, UpgradeOptions};

/// Prints the numbered plan of `options.mode` for the members `todo`.
pub(super) fn print_plan(
    options: &UpgradeOptions,
    new: &PluginFile,
    previous: Option<&PluginFile>,
    todo: &[Member],
    size: usize,
    out: &mut dyn FnMut(&str),
) {
    let mode = options.mode.name();
    let gate = format!(
        "gate: clustered, {size} members seen by every member, {} reports {} (at most {} s)",
        "the member",
        new.label(),
        options.gate_timeout.as_secs()
    );
    let drain = if options.drain.is_zero() {
        String::new()
    } else {
        let secs = options.drain.as_secs_f64();
        format!("drain {secs:.1} s (not ready, so a load balancer stops sending it requests), ")
    };
    let mut step = 0;
    let mut plan = |line: String| {
        step += 1;
        out(&format!("[{mode}] plan {step}: {line}"));
    };
    match options.mode {
        Mode::Rolling => {
            for m in todo {
                plan(format!(
                    "{}: {drain}upload {} as plugins/{} (hot replace of {}); {gate}",
                    m.label(),
                    new.path.display(),
                    m.file,
                    m.version
                ));
            }
        }
        Mode::SplitBrain => {
            if let Some(first) = todo.first() {
                plan(format!("{}: disable clustering cluster-wide; gate: every member standalone", first.label()));
            }
            for m in todo {
                plan(format!(
                    "{}: upload {} as plugins/{} (hot replace of {}, standalone); gate: it reports {}",
                    m.label(),
                    new.path.display(),
                    m.file,
                    m.version,
                    new.label()
                ));
            }
            if let Some(first) = todo.first() {
                plan(format!(
                    "{}: enable clustering cluster-wide (each member that stays disabled is told too); gate: every member clustered, {size} members, all on {}",
                    first.label(),
                    new.label()
                ));
            }
        }
        Mode::Switch => {
            let old = previous.map(|p| p.label()).unwrap_or_else(|| "the running strategy".into());
            for (i, m) in todo.iter().enumerate() {
                plan(format!(
                    "{}: remove plugins/{} ({old}; gate: standalone, keeping its entries), upload {} as plugins/{}; gate: clustered on {} with {} member(s), its entries merged",
                    m.label(),
                    m.file,
                    new.path.display(),
                    super::flows::switch_file(new),
                    new.label(),
                    i + 1
                ));
            }
        }
        Mode::Offline => {}
    }
    match previous {
        Some(p) => plan(format!(
            "on a failed gate: upload {} ({}) back on every member changed, each gated again",
            p.path.display(),
            p.label()
        )),
        None => plan("on a failed gate: rollback needs --previous FILE (not given)".to_string()),
    }
}
/// Prints the offline flow's steps: this command cannot stop and start nodes.
pub(super) fn offline_runbook(options: &UpgradeOptions, new: &PluginFile, out: &mut dyn FnMut(&str)) {
    let file = new.path.display();
    out("[offline] the offline flow stops and starts the nodes, which this command cannot do across machines: nothing is changed; run these steps (docs/upgrade.md, \"Offline\"):");
    out("[offline] 1. on every member: stop the node (SIGTERM or Ctrl-C; e.g. systemctl stop clusterhost)");
    out(&format!(
        "[offline] 2. on every member: cp {file} HOME/plugins/.{id}.so.tmp && mv HOME/plugins/.{id}.so.tmp HOME/plugins/{id}.so   ({})",
        new.label(),
        id = new.manifest.id
    ));
    out("[offline] 3. on every member: start the node (clusterhost run --home HOME ...)");
    let nodes: Vec<&str> = options.nodes.iter().map(String::as_str).collect();
    out(&format!(
        "[offline] 4. check: clusterhost cluster status --admin {} lists {} members, each on {} {}",
        nodes.first().copied().unwrap_or("URL"),
        nodes.len(),
        new.manifest.id,
        new.manifest.version
    ));
}
