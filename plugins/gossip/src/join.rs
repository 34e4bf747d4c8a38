//! Joining and leaving the cluster: the `joined` key, the wait for the
//! others, the state transfer before the member reports joined, and the
//! `Leaving` notices that end a join.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clusterhost_plugin_api::PluginResult;

use crate::core::Core;
use crate::membership::KEY_JOINED;
use crate::net::NetError;
use crate::wire::Msg;

/// Whether this member is in the cluster, and which join it is in.
#[derive(Default)]
pub(crate) struct JoinState {
    /// Set once a join has waited for the others, cleared when it leaves
    /// or stops: cluster operations and this member's place in its own
    /// view depend on it.
    joined: AtomicBool,
    /// This member's joins, counted and published as the `joined` key (0 =
    /// not joined), so a `Leaving` notice ends only the join it names.
    epoch: AtomicU64,
}

impl JoinState {
    /// Whether this member is joined.
    pub fn is_joined(&self) -> bool {
        self.joined.load(Ordering::SeqCst)
    }

    /// Marks this member not joined (it leaves or stops).
    pub fn set_left(&self) {
        self.joined.store(false, Ordering::SeqCst);
    }
}

impl Core {
    /// Whether this member is joined.
    pub(crate) fn is_joined(&self) -> bool {
        self.joining.is_joined()
    }

    /// Joins the cluster: announces it, waits for the others, then takes
    /// the state of every member.
    pub async fn join(self: &Arc<Self>) -> PluginResult<()> {
        let epoch = self.joining.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        self.set_key(KEY_JOINED, &epoch.to_string()).await;
        self.wait_for_others().await;
        self.joining.joined.store(true, Ordering::SeqCst);
        self.update_view().await;
        // Full state transfer from every member before reporting joined.
        let members = self.others();
        let received = self.pull_state_of(&members).await?;
        tracing::info!(members = members.len() + 1, entries = received, "joined the cluster");
        Ok(())
    }

    /// Waits until a joined, compatible peer shows up, or the discovery
    /// window passes (the first member of a cluster waits it out).
    async fn wait_for_others(&self) {
        let interval = self.config.gossip_interval();
        let mut window = interval * 6;
        if self.config.discovery.multicast.enabled {
            window += Duration::from_millis(self.config.discovery.multicast.listen_ms);
        }
        let deadline = Instant::now() + window.min(Duration::from_millis(self.config.timeouts.join_ms));
        loop {
            let others = self
                .peers()
                .await
                .into_iter()
                .any(|p| p.id != self.member && p.joined && p.wire.0 == self.wire.major && p.data_addr.is_some());
            if others || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(interval / 2).await;
        }
    }

    /// Takes the state of each of `members`; returns how many entries came.
    /// A member that refuses this one ends the join; any other failure is
    /// left to anti-entropy.
    async fn pull_state_of(self: &Arc<Self>, members: &[(String, SocketAddr)]) -> PluginResult<usize> {
        let mut received = 0;
        for (id, addr) in members {
            match self.pull_state(id, *addr).await {
                Ok(n) => received += n,
                Err(NetError::Refused { member, reason }) => {
                    self.leave().await;
                    return Err(format!("member {member} refused this member: {reason}").into());
                }
                Err(e) => tracing::warn!("state transfer from {id} failed: {e}; it will catch up by anti-entropy"),
            }
        }
        Ok(received)
    }

    /// Sends the `Leaving` notice of `member`'s join (`generation`,
    /// `epoch`) to every other member of the view but `member`, each in
    /// a task of the set returned (await it to know they were sent).
    pub(crate) fn tell_departure(&self, member: &str, generation: u64, epoch: u64) -> tokio::task::JoinSet<()> {
        let timeout = Duration::from_millis(500).min(self.config.operation_timeout());
        let mut notices = tokio::task::JoinSet::new();
        for (other, addr) in self.others().into_iter().filter(|(other, _)| other != member) {
            let (net, msg) = (self.net.clone(), Msg::Leaving { member: member.to_string(), generation, epoch });
            notices.spawn(async move {
                if let Err(e) = net.send(&other, addr, msg, timeout).await {
                    tracing::debug!(member = %other, "could not send member {other} a Leaving notice: {e}");
                }
            });
        }
        notices
    }

    /// Leaves the cluster; the member keeps running and may join again.
    pub async fn leave(self: &Arc<Self>) {
        // Tell the others first, so none of them sends this member a write
        // it can no longer acknowledge (gossip alone takes a round or two).
        let epoch = self.joining.epoch.load(Ordering::SeqCst);
        let mut notices = self.tell_departure(&self.member, self.generation, epoch);
        while notices.join_next().await.is_some() {}
        self.joining.set_left();
        self.liveness.stop();
        // The connections of this join end with it (a re-join makes new
        // ones); the notices queued above are flushed first.
        self.net.forget_all().await;
        self.set_key(KEY_JOINED, "0").await;
        self.view.clear_members();
        self.locks.wake_waiters();
    }
}
