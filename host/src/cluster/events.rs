//! Cluster events as listeners see them, and the listeners, called in the
//! order they were added; a failing or panicking listener is reported and
//! the others still run.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::lock;

/// An event delivered to listeners, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ClusterEvent {
    /// A member joined; `local` when it is this node.
    JoinedCluster { member: String, local: bool },
    /// A member left; `local` when it is this node.
    LeftCluster { member: String, local: bool },
    /// `member` became the senior member.
    MarkedSeniorClusterMember { member: String, local: bool },
    /// A cluster-wide setting changed.
    SettingChanged { key: String, value: String },
}

/// Receives cluster events. Runs on the event thread: return quickly and
/// spawn longer work.
pub trait ClusterListener: Send + Sync {
    /// Handles one event; an error is logged, never fatal.
    fn on_event(&self, event: &ClusterEvent) -> Result<(), String>;
}

impl<F: Fn(&ClusterEvent) -> Result<(), String> + Send + Sync> ClusterListener for F {
    fn on_event(&self, event: &ClusterEvent) -> Result<(), String> {
        self(event)
    }
}

/// The registered listeners, by name, in registration order.
#[derive(Default)]
pub(crate) struct Listeners {
    list: Mutex<Vec<(String, Arc<dyn ClusterListener>)>>,
}

impl Listeners {
    pub(crate) fn add(&self, name: &str, listener: Arc<dyn ClusterListener>) {
        lock(&self.list).push((name.to_string(), listener));
    }

    /// Calls every listener in order; failures are reported, never fatal.
    /// The list is copied first, so a listener may add another.
    pub(crate) fn dispatch(&self, event: ClusterEvent) {
        tracing::debug!(?event, "cluster event");
        let listeners = lock(&self.list).clone();
        for (name, listener) in listeners {
            match catch_unwind(AssertUnwindSafe(|| listener.on_event(&event))) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(listener = %name, ?event, "cluster listener failed: {e}"),
                Err(_) => tracing::error!(listener = %name, ?event, "cluster listener panicked; the others still run"),
            }
        }
    }
}
