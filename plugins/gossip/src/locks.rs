//! Cluster-wide locks, decided by the senior member. The lock table is an
//! internal cache ([`LOCKS`]) replicated like any other, so a new senior
//! finds every lock its predecessor granted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clusterhost_plugin_api::PluginResult;
use tokio::sync::Notify;

use crate::core::Core;
use crate::store::Store;
use crate::wire::Msg;

/// The internal cache holding the lock table: lock name -> its holder,
/// `(owner, member)` postcard-encoded.
const LOCKS: &str = "__locks";

/// How long one lock request waits at the senior before the requester asks
/// again (the senior may have changed meanwhile); also what a request
/// without a `wait_ms` waits.
pub(crate) const SLICE: Duration = Duration::from_secs(2);

/// What the lock decisions share on this member.
#[derive(Default)]
pub(crate) struct Locks {
    /// Woken when a lock may have come free: a release, a replicated write,
    /// a member left, or this member left; waiters at the senior look again.
    released: Notify,
    /// Serialises the senior's decisions, so two requests cannot both find
    /// a lock free (an async mutex: a decision awaits its replication).
    gate: tokio::sync::Mutex<()>,
}

impl Locks {
    /// Wakes every request waiting for a lock to look again.
    pub fn wake_waiters(&self) {
        self.released.notify_waiters();
    }
}

/// The holder of lock `name`: (owner, member it runs on).
fn holder(store: &Store, name: &str) -> Option<(String, String)> {
    store.get(LOCKS, name.as_bytes()).and_then(|v| postcard::from_bytes::<(String, String)>(&v).ok())
}

impl Core {
    /// The fencing number of `owner`'s grant of `name`, read from this
    /// member's replica: the version (hybrid logical clock) of the lock
    /// table's entry the grant wrote. The senior writes a grant only after
    /// every member has the table's last write, and its clock follows
    /// every version it received, so a grant (also by a new senior after a
    /// failover) always carries a greater version than the grants before;
    /// and a requester asks after the grant reached it (the senior answers
    /// once every member acknowledged it).
    pub(crate) fn lock_fence(&self, name: &str, owner: &str) -> Option<u64> {
        let (value, version) = self.replica.store.get_versioned(LOCKS, name.as_bytes())?;
        let (holder, _) = postcard::from_bytes::<(String, String)>(&value).ok()?;
        (holder == owner).then_some(version.hlc)
    }

    /// After `left` left the view: waiters look again, and the senior (in
    /// the view they left) releases the locks those members held.
    pub(crate) fn release_locks_after(self: &Arc<Self>, left: Vec<String>, senior: Option<&str>) {
        self.locks.wake_waiters();
        if senior == Some(self.member.as_str()) {
            let core = self.clone();
            tokio::spawn(async move { core.release_locks_of(&left).await });
        }
    }

    async fn release_locks_of(&self, members: &[String]) {
        let _gate = self.locks.gate.lock().await;
        let mut releases = Vec::new();
        for entry in self.replica.store.entries(LOCKS) {
            if let Ok((_, member)) = postcard::from_bytes::<(String, String)>(&entry.value) {
                if members.contains(&member) {
                    releases.push(self.replica.entry(LOCKS, entry.key, None));
                }
            }
        }
        if !releases.is_empty() {
            tracing::info!(locks = releases.len(), "released the locks of members that left");
            let _ = self.replicate(releases).await;
            self.locks.wake_waiters();
        }
    }

    /// On the senior: grants `name` to `owner` (of `member`) within `wait`.
    pub(crate) async fn grant(&self, name: &str, owner: &str, member: &str, wait: Duration) -> Result<bool, String> {
        let deadline = Instant::now() + wait;
        loop {
            let released = self.locks.released.notified();
            {
                let _gate = self.locks.gate.lock().await;
                if self.view.senior().as_deref() != Some(self.member.as_str()) {
                    return Err("this member is no longer the senior".into());
                }
                match holder(&self.replica.store, name) {
                    Some((holder, _)) if holder == owner => return Ok(true),
                    Some(_) => {}
                    None => {
                        let value = postcard::to_allocvec(&(owner, member)).map_err(|e| e.to_string())?;
                        let entry = self.replica.entry(LOCKS, name.as_bytes().to_vec(), Some(value));
                        self.replicate(vec![entry]).await.map_err(|e| e.to_string())?;
                        return Ok(true);
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            let _ = tokio::time::timeout(deadline - now, released).await;
        }
    }

    /// On the senior: releases `name` if `owner` holds it; true if it did.
    pub(crate) async fn release(&self, name: &str, owner: &str) -> Result<bool, String> {
        let _gate = self.locks.gate.lock().await;
        match holder(&self.replica.store, name) {
            Some((holder, _)) if holder == owner => {
                let entry = self.replica.entry(LOCKS, name.as_bytes().to_vec(), None);
                self.replicate(vec![entry]).await.map_err(|e| e.to_string())?;
                self.locks.wake_waiters();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// From any member: asks the senior for the lock, retrying across
    /// senior changes, until granted or `wait` (None: forever) passes.
    pub(crate) async fn acquire(
        self: Arc<Self>,
        name: String,
        owner: String,
        wait: Option<Duration>,
    ) -> PluginResult<bool> {
        let deadline = wait.map(|w| Instant::now() + w);
        loop {
            if !self.is_joined() {
                return Err("this member is not in the cluster".into());
            }
            let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let slice = remaining.unwrap_or(SLICE).min(SLICE);
            let senior = self.view.senior();
            let outcome = match senior {
                Some(s) if s == self.member => self.grant(&name, &owner, &self.member, slice).await,
                Some(s) => self.ask_senior(&s, &name, &owner, slice).await,
                None => Err("no senior yet".into()),
            };
            match outcome {
                Ok(true) => return Ok(true),
                Ok(false) => {}
                // The senior changed or is unreachable: try again shortly.
                Err(e) => {
                    tracing::debug!("lock {name}: {e}; retrying");
                    tokio::time::sleep(self.config.gossip_interval()).await;
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
        }
    }

    /// As [`acquire`](Self::acquire), safe to drop: the request runs on its
    /// own task, and a lock granted after the caller stopped waiting (its
    /// future was dropped) is released at once, so an abandoned wait never
    /// holds a lock nobody will release.
    pub(crate) async fn acquire_detached(
        self: Arc<Self>,
        name: String,
        owner: String,
        wait: Option<Duration>,
    ) -> PluginResult<bool> {
        let task = tokio::spawn(self.clone().acquire(name.clone(), owner.clone(), wait));
        let runtime = tokio::runtime::Handle::current();
        let mut guard = ReleaseIfAbandoned { core: self, name, owner, runtime, task: Some(task) };
        let outcome = guard.task.as_mut().expect("set above").await;
        guard.task = None;
        match outcome {
            Ok(result) => result,
            Err(e) => Err(format!("the lock request ended: {e}").into()),
        }
    }

    /// Asks `senior` to grant `name` to `owner` within `slice`.
    async fn ask_senior(&self, senior: &str, name: &str, owner: &str, slice: Duration) -> Result<bool, String> {
        let Some(addr) = self.addr_of(senior) else { return Err("the senior is unknown".into()) };
        let req = self.net.next_req();
        let msg = Msg::Lock {
            req,
            name: name.to_string(),
            owner: owner.to_string(),
            member: self.member.clone(),
            wait_ms: Some(slice.as_millis() as u64),
        };
        let timeout = slice + self.config.operation_timeout();
        match self.net.request(senior, addr, msg, req, timeout).await {
            Ok(Msg::LockReply { granted, error: None, .. }) => Ok(granted),
            Ok(Msg::LockReply { error: Some(e), .. }) => Err(e),
            Ok(_) => Err("unexpected answer".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// From any member: releases `name` at the senior if `owner` holds it.
    pub(crate) async fn unlock(self: Arc<Self>, name: String, owner: String) -> PluginResult<bool> {
        let senior = self.view.senior();
        match senior {
            Some(s) if s == self.member => Ok(self.release(&name, &owner).await?),
            Some(s) => {
                let addr = self.addr_of(&s).ok_or("the senior is unknown")?;
                let req = self.net.next_req();
                match self
                    .net
                    .request(&s, addr, Msg::Unlock { req, name, owner }, req, self.config.operation_timeout())
                    .await?
                {
                    Msg::UnlockReply { released, .. } => Ok(released),
                    _ => Err("unexpected answer".into()),
                }
            }
            None => Ok(false),
        }
    }
}

/// Releases a lock granted to a request whose caller went away.
struct ReleaseIfAbandoned {
    core: Arc<Core>,
    name: String,
    owner: String,
    /// The plugin's runtime (the drop may run on a host thread, outside it).
    runtime: tokio::runtime::Handle,
    /// The request, while the caller still waits for it.
    task: Option<tokio::task::JoinHandle<PluginResult<bool>>>,
}

impl Drop for ReleaseIfAbandoned {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else { return };
        let (core, name, owner) = (self.core.clone(), std::mem::take(&mut self.name), std::mem::take(&mut self.owner));
        self.runtime.spawn(async move {
            if let Ok(Ok(true)) = task.await {
                tracing::debug!("lock {name}: granted after its caller stopped waiting; released");
                let _ = core.unlock(name, owner).await;
            }
        });
    }
}
