//! Cluster-wide locks, taken through the serving strategy; a held lock
//! releases through the strategy that granted it, even after a join or leave.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::strategy::StrategyRef;
use super::{ClusterError, ClusterManager};

/// Makes owner tokens: `node/n`, unique on this node.
#[derive(Default)]
pub(crate) struct Owners(AtomicU64);

impl Owners {
    fn next(&self, node: &str) -> String {
        format!("{node}/{}", self.0.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

impl ClusterManager {
    /// Waits for the cluster-wide lock `name` (this node's while standalone).
    pub async fn lock(&self, name: &str) -> Result<ClusterLock, ClusterError> {
        let owner = self.shared.owners.next(&self.shared.node);
        let via = self.serving();
        via.lock(name, &owner).await?;
        Ok(ClusterLock::new(name, owner, via, self.shared.runtime.clone()))
    }

    /// Takes the lock `name` if that happens within `timeout`.
    pub async fn try_lock(&self, name: &str, timeout: Duration) -> Result<Option<ClusterLock>, ClusterError> {
        let owner = self.shared.owners.next(&self.shared.node);
        let via = self.serving();
        let taken = via.try_lock(name, &owner, timeout).await?;
        Ok(taken.then(|| ClusterLock::new(name, owner, via, self.shared.runtime.clone())))
    }
}

/// A held lock; release it with [`unlock`](Self::unlock) (dropping it
/// releases it in the background).
pub struct ClusterLock {
    name: String,
    owner: String,
    /// The strategy that granted it: the release goes there.
    via: Arc<StrategyRef>,
    /// Where a dropped lock's release runs.
    runtime: tokio::runtime::Handle,
    released: bool,
}

impl ClusterLock {
    fn new(name: &str, owner: String, via: Arc<StrategyRef>, runtime: tokio::runtime::Handle) -> Self {
        ClusterLock { name: name.to_string(), owner, via, runtime, released: false }
    }

    /// The lock's owner token.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Releases the lock; false if it was no longer held (for example this
    /// node left the cluster, which released it).
    pub async fn unlock(mut self) -> Result<bool, ClusterError> {
        self.released = true;
        self.via.unlock(&self.name, &self.owner).await
    }
}

impl Drop for ClusterLock {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let (name, owner, via) = (std::mem::take(&mut self.name), std::mem::take(&mut self.owner), self.via.clone());
        self.runtime.spawn(async move {
            let _ = via.unlock(&name, &owner).await;
        });
    }
}
