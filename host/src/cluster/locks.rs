//! Cluster-wide locks, taken through the serving strategy; a held lock
//! releases through the strategy that granted it, even after a join or leave.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clusterhost_plugin_api::cluster::Capabilities;

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
        self.granted(name, owner, via).await
    }

    /// Takes the lock `name` if that happens within `timeout`.
    pub async fn try_lock(&self, name: &str, timeout: Duration) -> Result<Option<ClusterLock>, ClusterError> {
        let owner = self.shared.owners.next(&self.shared.node);
        let via = self.serving();
        if !via.try_lock(name, &owner, timeout).await? {
            return Ok(None);
        }
        self.granted(name, owner, via).await.map(Some)
    }

    /// The guard of a grant, with its fencing number when the strategy
    /// offers them. A grant lost before its number could be read (its
    /// holder left the cluster meanwhile) is an error, not a guard.
    async fn granted(&self, name: &str, owner: String, via: Arc<StrategyRef>) -> Result<ClusterLock, ClusterError> {
        let mut lock = ClusterLock::new(name, owner, via, self.shared.runtime.clone());
        if !lock.via.capabilities().contains(Capabilities::FENCED_LOCKS) {
            return Ok(lock);
        }
        match lock.via.lock_fence(name, &lock.owner).await? {
            Some(fence) => {
                lock.fence = Some(fence);
                Ok(lock)
            }
            // Not held any more: the guard's drop sends a release anyway.
            None => Err(ClusterError::Strategy {
                plugin: lock.via.label(),
                op: "lock_fence",
                panicked: false,
                message: format!("lock {name} was granted but no longer held when its fencing number was read (this member left the cluster meanwhile?); take it again"),
            }),
        }
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
    /// The grant's fencing number, when the strategy offers them.
    fence: Option<u64>,
}

impl ClusterLock {
    fn new(name: &str, owner: String, via: Arc<StrategyRef>, runtime: tokio::runtime::Handle) -> Self {
        ClusterLock { name: name.to_string(), owner, via, runtime, released: false, fence: None }
    }

    /// The grant's fencing number: greater than every number an earlier
    /// grant of this lock got, on any member (also across a senior's
    /// failover). Send it with every write to a resource the lock guards;
    /// the resource refuses a number lower than the highest it has seen,
    /// so a holder that lost the lock (paused, cut off) cannot overwrite
    /// its successor's work. `None` when the strategy offers no fencing
    /// numbers (one built before plugin API 0.1.2).
    pub fn fence(&self) -> Option<u64> {
        self.fence
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
