//! The settings in force while the node runs: what plugins read through
//! `Host::property`, kept current on reload, with the restart keys held at
//! their start values and the file's differing ones shown as pending.

use super::{Properties, RESTART_KEYS};

/// The values plugins read through `Host::property`, kept current on reload;
/// also the node's current settings as a whole, for the admin API.
///
/// The first [`update`](Self::update) (at start) fixes the
/// [`RESTART_KEYS`]: later updates keep their start values in force and
/// record the file's differing values as pending until the next start.
#[derive(Debug, Clone, Default)]
pub struct NodeValues {
    inner: std::sync::Arc<std::sync::RwLock<ValuesState>>,
}

#[derive(Debug, Default)]
struct ValuesState {
    /// What plugins read by key.
    values: std::collections::BTreeMap<String, String>,
    /// The settings in force.
    current: Properties,
    /// The settings the node started with; `None` before the first update.
    started: Option<Properties>,
    /// Restart keys whose value in the last file differs from the one in force.
    pending: std::collections::BTreeMap<String, String>,
}

impl NodeValues {
    /// The values of a node named `name` whose strategy listens on `port`,
    /// every other key at its default (a member a test or the conformance
    /// suite runs in-process).
    pub fn member(name: &str, port: u16) -> NodeValues {
        let values = NodeValues::default();
        values.update(&Properties {
            node_name: Some(name.to_string()),
            cluster_port: Some(port),
            ..Properties::default()
        });
        values
    }

    /// Takes `properties` as the settings in force, but for the restart
    /// keys after the first call: those keep their start values, and the
    /// differing new ones are [`pending`](Self::pending).
    pub fn update(&self, properties: &Properties) {
        let mut state = clusterhost_plugin_api::sync::write(&self.inner);
        let started = state.started.get_or_insert_with(|| properties.clone()).clone();
        let mut current = properties.clone();
        current.keep_restart_keys(&started);
        let (wanted, in_force) = (properties.effective(), current.effective());
        state.pending = RESTART_KEYS
            .iter()
            .filter_map(|key| {
                let value = wanted.get(*key)?;
                (in_force.get(*key) != Some(value)).then(|| (key.to_string(), value.clone()))
            })
            .collect();
        state.values = current.values();
        state.current = current;
    }

    /// The settings in force (the last good file, with the overrides
    /// applied, and the restart keys as the node started with them).
    pub fn properties(&self) -> Properties {
        clusterhost_plugin_api::sync::read(&self.inner).current.clone()
    }

    /// The restart keys whose stored value waits for the next start: key → stored value.
    pub fn pending(&self) -> std::collections::BTreeMap<String, String> {
        clusterhost_plugin_api::sync::read(&self.inner).pending.clone()
    }

    /// One value.
    pub fn get(&self, key: &str) -> Option<String> {
        clusterhost_plugin_api::sync::read(&self.inner).values.get(key).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::parse;
    use super::*;

    #[test]
    fn restart_keys_keep_their_start_values_and_show_as_pending() {
        let values = NodeValues::default();
        let (first, _) = parse("node.name = first\ncluster.startup.retry.count = 2\n").unwrap();
        values.update(&first);
        assert!(values.pending().is_empty());
        let (second, _) = parse("node.name = second\ncluster.port = 22032\ncluster.startup.retry.count = 3\n").unwrap();
        values.update(&second);
        assert_eq!(values.get("node.name").as_deref(), Some("first"));
        assert_eq!(values.get("cluster.port"), None);
        assert_eq!(values.properties().startup_retry_count, 3, "other keys apply at once");
        let pending: Vec<(String, String)> = values.pending().into_iter().collect();
        assert_eq!(pending, vec![("cluster.port".into(), "22032".into()), ("node.name".into(), "second".into())]);
        values.update(&first);
        assert!(values.pending().is_empty(), "back to the start values: nothing pending");
    }
}
