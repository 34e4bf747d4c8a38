//! Locks: a lease per lock name that the holder extends every heartbeat,
//! an owner token so only the holder releases it, and a fencing number
//! that only grows. Waiters wake on a release notice, and poll.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use redis::Script;
use tokio::sync::Notify;

use crate::core::{lock, Core};
use crate::error::Error;

/// Takes a free lock: KEYS lock, fence; ARGV holder ("member\nowner"),
/// lease ms, cluster time ms. The fencing number never goes below the
/// cluster time, so it keeps growing across a Redis restart that lost the
/// counter.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local fence = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[3])
if fence < floor then
  fence = floor
  redis.call('SET', KEYS[2], fence)
end
redis.call('SET', KEYS[1], ARGV[1] .. '\n' .. fence, 'PX', ARGV[2])
return fence
"#,
    )
});

/// Deletes the lock only if `ARGV[1]` ("member\nowner\n") holds it.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #ARGV[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"#,
    )
});

/// Extends the lease only if the stored value is still ours.
static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#,
    )
});

/// This member's side of the locks. Part of [`Core`].
#[derive(Default)]
pub(crate) struct Locks {
    /// Locks this member holds: name -> (owner token, stored value). The
    /// heartbeat extends each; leaving releases each.
    held: Mutex<HashMap<String, (String, String)>>,
    /// Woken when a lock may have become free: a release notice, or a
    /// member left (its locks go with its lease).
    released: Notify,
}

impl Locks {
    /// Wakes every member waiting for a lock here, to try again.
    pub(crate) fn wake_waiters(&self) {
        self.released.notify_waiters();
    }

    /// Forgets the held locks without releasing them: this member lost
    /// Redis, and their leases expire there on their own.
    pub(crate) fn forget_all(&self) {
        lock(&self.held).clear();
    }

    /// How many locks this member holds (the `locks_held` stat).
    pub(crate) fn count(&self) -> u64 {
        lock(&self.held).len() as u64
    }
}

impl Core {
    /// The fencing number of `owner`'s grant of `name`, as this member
    /// took it (the `INCR` of `P:fence:{name}` in the taking script, never
    /// below the cluster time): `None` when it does not hold it.
    pub(crate) fn lock_fence(&self, name: &str, owner: &str) -> Option<u64> {
        let held = lock(&self.locks.held);
        let (holder, value) = held.get(name)?;
        (holder == owner).then(|| value.rsplit('\n').next()?.parse().ok()).flatten()
    }

    async fn try_acquire(&self, name: &str, owner: &str) -> Result<bool, Error> {
        let (key, fence) = (self.keys.lock(name), self.keys.fence(name));
        let holder = format!("{}\n{owner}", self.member);
        let lease = self.config.membership.member_ttl_ms.to_string();
        let floor = self.cluster_time_ms().to_string();
        let got: u64 = self
            .script(&ACQUIRE, &[&key, &fence], &[holder.as_bytes(), lease.as_bytes(), floor.as_bytes()], false)
            .await?;
        if got == 0 {
            return Ok(false);
        }
        lock(&self.locks.held).insert(name.to_string(), (owner.to_string(), format!("{holder}\n{got}")));
        if self.keeps_held_registry() {
            let registry = self.keys.held(&self.member);
            let mut pipe = redis::pipe();
            pipe.cmd("SADD").arg(&registry).arg(name).ignore();
            pipe.cmd("PEXPIRE").arg(&registry).arg(self.held_registry_ttl_ms()).ignore();
            if let Err(e) = self.pipe::<()>(&pipe).await {
                tracing::debug!("could not note lock {name} as held (if this member dies, its lease frees it): {e}");
            }
        }
        Ok(true)
    }

    /// Whether this member notes its locks in `{P}:held:<id>`: only where a
    /// dead member can be found on its connections before its key expires
    /// (crate::membership's presence check: single and Sentinel modes).
    fn keeps_held_registry(&self) -> bool {
        self.config.membership.presence && self.config.mode != crate::config::Mode::Cluster
    }

    /// The registry outlives a lease, so it is there while any of them is.
    fn held_registry_ttl_ms(&self) -> u64 {
        self.config.membership.member_ttl_ms.saturating_mul(2)
    }

    /// Releases the locks member `id` held, now that it was found dead
    /// (crate::membership): each only while `id` still holds it, each with
    /// its release notice so waiters try again at once. A lock it took just
    /// before it died and had not noted yet is freed by its lease.
    pub(crate) async fn release_locks_of_dead(&self, id: &str) {
        let registry = self.keys.held(id);
        let names: Vec<String> = match self.query(redis::cmd("SMEMBERS").arg(&registry)).await {
            Ok(names) => names,
            Err(e) => {
                tracing::debug!("could not read the locks {id} held (their leases free them): {e}");
                return;
            }
        };
        let prefix = format!("{id}\n");
        for name in names {
            let key = self.keys.lock(&name);
            match self.script::<i64>(&RELEASE, &[&key], &[prefix.as_bytes()], true).await {
                Ok(1) => {
                    tracing::info!(member = %id, lock = %name, "lock {name} of the dead member {id} released");
                    self.publish_event(&format!("unlocked\n{name}")).await;
                }
                Ok(_) => {}
                Err(e) => tracing::debug!("could not release lock {name} of {id} (its lease frees it): {e}"),
            }
        }
        let _ = self.query::<()>(redis::cmd("DEL").arg(&registry)).await;
    }

    pub(crate) async fn acquire(&self, name: &str, owner: &str, deadline: Option<Instant>) -> Result<bool, Error> {
        loop {
            let released = self.locks.released.notified();
            if self.try_acquire(name, owner).await? {
                return Ok(true);
            }
            // Woken by a release notice; polled too (a holder that died
            // lets its lease expire without a notice).
            let mut wait = Duration::from_millis(100);
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(false);
                }
                wait = wait.min(left);
            }
            let _ = tokio::time::timeout(wait, released).await;
        }
    }

    pub(crate) async fn release(&self, name: &str, owner: &str) -> Result<bool, Error> {
        let key = self.keys.lock(name);
        let prefix = format!("{}\n{owner}\n", self.member);
        let released: i64 = self.script(&RELEASE, &[&key], &[prefix.as_bytes()], true).await?;
        lock(&self.locks.held).remove(name);
        if self.keeps_held_registry() {
            let _ = self.query::<()>(redis::cmd("SREM").arg(self.keys.held(&self.member)).arg(name)).await;
        }
        if released == 1 {
            self.publish_event(&format!("unlocked\n{name}")).await;
        }
        Ok(released == 1)
    }

    pub(crate) async fn release_all_locks(&self) {
        let held: Vec<(String, String)> =
            lock(&self.locks.held).iter().map(|(n, (o, _))| (n.clone(), o.clone())).collect();
        for (name, owner) in held {
            if let Err(e) = self.release(&name, &owner).await {
                lock(&self.locks.held).remove(&name);
                tracing::warn!("could not release lock {name} (its lease expires on its own): {e}");
            }
        }
    }

    pub(crate) async fn extend_locks(&self) {
        let held: Vec<(String, String)> =
            lock(&self.locks.held).iter().map(|(n, (_, v))| (n.clone(), v.clone())).collect();
        let lease = self.config.membership.member_ttl_ms.to_string();
        if !held.is_empty() && self.keeps_held_registry() {
            let registry = self.keys.held(&self.member);
            let _ = self.query::<()>(redis::cmd("PEXPIRE").arg(registry).arg(self.held_registry_ttl_ms())).await;
        }
        for (name, value) in held {
            let key = self.keys.lock(&name);
            match self.script::<i64>(&EXTEND, &[&key], &[value.as_bytes(), lease.as_bytes()], true).await {
                Ok(1) => {}
                Ok(_) => {
                    tracing::warn!("lock {name} was lost (its lease expired while Redis was unreachable)");
                    lock(&self.locks.held).remove(&name);
                }
                Err(e) => tracing::debug!("could not extend lock {name}: {e}"),
            }
        }
    }
}
