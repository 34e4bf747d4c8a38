//! An in-memory cluster strategy for tests (feature `memory`): every member
//! of a [`MemoryFabric`] lives in one process and shares its state. It
//! implements the whole [`Strategy`] contract with the simplest possible
//! engine, so host logic can be tested without a network; it is never a
//! production strategy.

use std::collections::BTreeMap;
use std::future::{ready, Future};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::cluster::*;
use crate::local::{LocalCaches, LocalChange, LocalLocks};
use crate::membership::{resolve_target, AnnouncedView};
use crate::plugin::PluginResult;
use crate::strategy::{ClusterHost, Strategy};

/// The shared "network" of an in-memory cluster.
pub struct MemoryFabric {
    state: Mutex<Fabric>,
    /// The cluster's caches: one copy, shared by every member; every
    /// change is told to every joined member's host (entry events).
    caches: LocalCaches,
    /// Writes one at a time, so the member a change comes from is known
    /// to the caches' observer (`writer`), and a key's changes reach every
    /// host in the order they were made.
    writes: Mutex<()>,
    /// The member whose write is in progress (set under `writes`).
    writer: Arc<Mutex<String>>,
    /// The cluster's locks, each held on behalf of a member.
    locks: LocalLocks,
    next_seq: AtomicU64,
}

#[derive(Default)]
struct Fabric {
    /// Connected members (their strategy exists), joined or not.
    members: BTreeMap<String, Slot>,
    settings: BTreeMap<String, String>,
    /// Events to deliver once the lock is released: delivering one can run
    /// arbitrary host code (even drop the last host reference, and with it
    /// a strategy whose Drop takes this lock).
    outbox: Vec<(ClusterHost, StrategyEvent)>,
}

struct Slot {
    host: ClusterHost,
    joined: Option<u64>,
    started_at_ms: u64,
    version: String,
    /// The fabric's membership as last announced to this member's host.
    announced: AnnouncedView,
}

impl MemoryFabric {
    /// A new, empty fabric.
    pub fn new() -> Arc<Self> {
        Arc::new_cyclic(|fabric: &std::sync::Weak<MemoryFabric>| {
            let (fabric, writer) = (fabric.clone(), Arc::new(Mutex::new(String::new())));
            let origin = writer.clone();
            let observer = move |change: LocalChange<'_>| {
                let Some(fabric) = fabric.upgrade() else { return };
                let hosts: Vec<ClusterHost> =
                    fabric.state().members.values().filter(|s| s.joined.is_some()).map(|s| s.host.clone()).collect();
                let origin = crate::sync::lock(&origin).clone();
                for host in hosts.into_iter().filter(|host| host.cache_listened(change.cache)) {
                    host.emit_cache_event(CacheEvent {
                        kind: change.kind,
                        cache: change.cache.to_string(),
                        key: change.key.to_vec(),
                        value: change.value.map(<[u8]>::to_vec),
                        version: change.version,
                        origin: origin.clone(),
                    });
                }
            };
            MemoryFabric {
                state: Mutex::default(),
                caches: LocalCaches::observed(Arc::new(observer)),
                writes: Mutex::new(()),
                writer,
                locks: LocalLocks::default(),
                next_seq: AtomicU64::new(0),
            }
        })
    }

    fn state(&self) -> MutexGuard<'_, Fabric> {
        crate::sync::lock(&self.state)
    }

    /// Runs `f` on the state, then delivers the events it queued, unlocked.
    fn with<T>(&self, f: impl FnOnce(&mut Fabric) -> T) -> T {
        let (result, outbox) = {
            let mut state = self.state();
            let result = f(&mut state);
            (result, std::mem::take(&mut state.outbox))
        };
        for (host, event) in outbox {
            host.emit(event);
        }
        result
    }

    /// Simulates `member` dying: it leaves without a goodbye, its locks are
    /// released, the others see it leave and it sees itself leave.
    pub fn crash(&self, member: &str) {
        self.with(|state| {
            if let Some(slot) = state.members.get(member) {
                let event = StrategyEvent::Left { member: member.to_string() };
                state.outbox.push((slot.host.clone(), event));
            }
            leave(state, member);
        });
        self.locks.release_member(member);
    }
}

fn joined_in_order(state: &Fabric) -> Vec<(String, u64)> {
    let mut joined: Vec<(String, u64)> =
        state.members.iter().filter_map(|(id, slot)| slot.joined.map(|seq| (id.clone(), seq))).collect();
    joined.sort_by_key(|(_, seq)| *seq);
    joined
}

/// The joined members' ids in join order; the first is the senior.
fn joined_ids(state: &Fabric) -> Vec<String> {
    joined_in_order(state).into_iter().map(|(id, _)| id).collect()
}

/// Shows every member the fabric's membership as it is now: a joined
/// member's host gets what changed (queued in the outbox), a member not
/// joined forgets it.
fn announce(state: &mut Fabric) {
    let joined = joined_ids(state);
    let senior = joined.first().cloned();
    for (id, slot) in &mut state.members {
        if slot.joined.is_none() {
            slot.announced.forget();
            continue;
        }
        let events = slot.announced.update(id, joined.clone(), senior.clone());
        state.outbox.extend(events.into_iter().map(|event| (slot.host.clone(), event)));
    }
}

fn leave(state: &mut Fabric, member: &str) {
    let Some(slot) = state.members.get_mut(member) else { return };
    if slot.joined.take().is_none() {
        return;
    }
    announce(state);
}

/// One member's strategy on a [`MemoryFabric`].
pub struct MemoryStrategy {
    fabric: Arc<MemoryFabric>,
    id: String,
    fail_starts: AtomicU32,
    hang_in_start: bool,
    attempts: Arc<AtomicU32>,
    on_attempt: Option<Box<dyn Fn(u32) + Send + Sync>>,
    /// Held while the strategy lives: its sweeper stops once it is gone.
    _alive: Arc<()>,
}

/// How often each member sweeps expired entries.
const SWEEP_EVERY: Duration = Duration::from_millis(100);

impl MemoryStrategy {
    /// Connects member `id` (running strategy `version`) to `fabric`.
    pub fn new(fabric: Arc<MemoryFabric>, host: ClusterHost, id: &str, version: &str) -> Self {
        let slot = Slot {
            host,
            joined: None,
            started_at_ms: now_ms(),
            version: version.to_string(),
            announced: AnnouncedView::new(),
        };
        let runtime = slot.host.runtime().clone();
        fabric.state().members.insert(id.to_string(), slot);
        // Expires what outlived its time to live while this member lives
        // (every member sweeps the one shared copy; the first to find an
        // entry expired reports it, as its origin).
        let alive = Arc::new(());
        let (weak_fabric, weak_alive, member) = (Arc::downgrade(&fabric), Arc::downgrade(&alive), id.to_string());
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(SWEEP_EVERY).await;
                let (Some(fabric), Some(_alive)) = (weak_fabric.upgrade(), weak_alive.upgrade()) else { return };
                let _one_at_a_time = crate::sync::lock(&fabric.writes);
                member.clone_into(&mut crate::sync::lock(&fabric.writer));
                fabric.caches.sweep(now_ms());
            }
        });
        MemoryStrategy {
            fabric,
            _alive: alive,
            id: id.to_string(),
            fail_starts: AtomicU32::new(0),
            hang_in_start: false,
            attempts: Arc::new(AtomicU32::new(0)),
            on_attempt: None,
        }
    }

    /// Calls `f` with the attempt number at each `start_clustering`.
    pub fn on_start_attempt(mut self, f: impl Fn(u32) + Send + Sync + 'static) -> Self {
        self.on_attempt = Some(Box::new(f));
        self
    }

    /// The first `n` calls to `start_clustering` fail.
    pub fn fail_first_starts(self, n: u32) -> Self {
        self.fail_starts.store(n, Ordering::SeqCst);
        self
    }

    /// `start_clustering` never completes.
    pub fn hang_in_start(mut self) -> Self {
        self.hang_in_start = true;
        self
    }

    /// Counts calls to `start_clustering`.
    pub fn attempts(&self) -> Arc<AtomicU32> {
        self.attempts.clone()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Fabric) -> T) -> T {
        self.fabric.with(f)
    }

    fn caches(&self) -> &LocalCaches {
        &self.fabric.caches
    }

    /// Runs a write on the caches as this member's (see `MemoryFabric::writes`).
    fn write<T>(&self, f: impl FnOnce(&LocalCaches) -> T) -> T {
        let _one_at_a_time = crate::sync::lock(&self.fabric.writes);
        self.id.clone_into(&mut crate::sync::lock(&self.fabric.writer));
        f(&self.fabric.caches)
    }

    fn targets(&self, target: &TaskTarget) -> (Vec<(String, ClusterHost)>, Vec<TaskReply>) {
        self.with(|s| {
            let joined = joined_ids(s);
            match resolve_target(target, &self.id, &joined, joined.first().map(String::as_str)) {
                Ok(ids) => {
                    let found = ids.into_iter().filter_map(|id| {
                        let host = s.members.get(&id)?.host.clone();
                        Some((id, host))
                    });
                    (found.collect(), Vec::new())
                }
                Err(missing) => (Vec::new(), vec![missing.into_reply()]),
            }
        })
    }
}

impl Drop for MemoryStrategy {
    fn drop(&mut self) {
        // The slot (and its host handle) is dropped after the lock is released.
        let _slot = self.fabric.with(|state| {
            leave(state, &self.id);
            state.members.remove(&self.id)
        });
        self.fabric.locks.release_member(&self.id);
    }
}

impl Strategy for MemoryStrategy {
    fn start_clustering(&self) -> impl Future<Output = PluginResult<()>> + Send {
        let attempt = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(f) = &self.on_attempt {
            f(attempt);
        }
        let fail = self.fail_starts.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        let hang = self.hang_in_start;
        let joined = if fail || hang {
            false
        } else {
            self.with(|s| {
                let seq = self.fabric.next_seq.fetch_add(1, Ordering::SeqCst);
                if let Some(slot) = s.members.get_mut(&self.id) {
                    if slot.joined.is_none() {
                        slot.joined = Some(seq);
                        slot.started_at_ms = now_ms();
                        announce(s);
                    }
                }
            });
            true
        };
        async move {
            if hang {
                std::future::pending::<()>().await;
            }
            if fail {
                return Err(format!("simulated cluster start failure (attempt {attempt})").into());
            }
            debug_assert!(joined);
            Ok(())
        }
    }

    fn stop_clustering(&self) -> impl Future<Output = PluginResult<()>> + Send {
        self.with(|s| leave(s, &self.id));
        self.fabric.locks.release_member(&self.id);
        ready(Ok(()))
    }

    fn local_member(&self) -> String {
        self.id.clone()
    }

    fn members(&self) -> Vec<Member> {
        self.with(|s| {
            let Some(own) = s.members.get(&self.id) else { return Vec::new() };
            own.announced
                .members()
                .iter()
                .filter_map(|id| {
                    let slot = s.members.get(id)?;
                    Some(Member {
                        id: id.clone(),
                        address: format!("memory://{id}"),
                        started_at_ms: slot.started_at_ms,
                        plugin_version: slot.version.clone(),
                    })
                })
                .collect()
        })
    }

    fn senior_member(&self) -> Option<String> {
        self.with(|s| s.members.get(&self.id)?.announced.senior().map(str::to_string))
    }

    fn cache_get_now(&self, cache: &str, key: &[u8]) -> Option<PluginResult<Option<Vec<u8>>>> {
        Some(Ok(self.caches().get(cache, key)))
    }

    fn cache_get(&self, cache: &str, key: &[u8]) -> impl Future<Output = PluginResult<Option<Vec<u8>>>> + Send {
        ready(Ok(self.caches().get(cache, key)))
    }

    fn cache_put(&self, cache: &str, key: Vec<u8>, value: Vec<u8>) -> impl Future<Output = PluginResult<()>> + Send {
        self.write(|c| c.put(cache, key, value, now_ms()));
        ready(Ok(()))
    }

    fn cache_remove(&self, cache: &str, key: &[u8]) -> impl Future<Output = PluginResult<bool>> + Send {
        ready(Ok(self.write(|c| c.remove(cache, key))))
    }

    fn cache_contains(&self, cache: &str, key: &[u8]) -> impl Future<Output = PluginResult<bool>> + Send {
        ready(Ok(self.caches().contains(cache, key)))
    }

    fn cache_size(&self, cache: &str) -> impl Future<Output = PluginResult<u64>> + Send {
        ready(Ok(self.caches().len(cache)))
    }

    fn cache_clear(&self, cache: &str) -> impl Future<Output = PluginResult<()>> + Send {
        self.write(|c| c.clear(cache));
        ready(Ok(()))
    }

    fn cache_keys(&self, cache: &str) -> impl Future<Output = PluginResult<Vec<Vec<u8>>>> + Send {
        ready(Ok(self.caches().keys(cache)))
    }

    fn cache_get_all(
        &self,
        cache: &str,
        keys: Vec<Vec<u8>>,
    ) -> impl Future<Output = PluginResult<Vec<Option<Vec<u8>>>>> + Send {
        ready(Ok(self.caches().get_all(cache, &keys)))
    }

    fn cache_put_all(&self, cache: &str, entries: Vec<Entry>) -> impl Future<Output = PluginResult<()>> + Send {
        self.write(|c| c.put_all(cache, entries, now_ms()));
        ready(Ok(()))
    }

    fn cache_merge(&self, cache: &str, entries: Vec<Entry>) -> impl Future<Output = PluginResult<()>> + Send {
        self.write(|c| c.merge(cache, entries));
        ready(Ok(()))
    }

    fn cache_entries(&self, cache: &str) -> impl Future<Output = PluginResult<Vec<Entry>>> + Send {
        ready(Ok(self.caches().entries(cache)))
    }

    fn cache_names(&self) -> impl Future<Output = PluginResult<Vec<String>>> + Send {
        ready(Ok(self.caches().names()))
    }

    fn cache_local_size(&self, cache: &str) -> impl Future<Output = PluginResult<CacheSize>> + Send {
        ready(Ok(self.caches().size(cache)))
    }

    fn lock(&self, name: &str, owner: &str) -> impl Future<Output = PluginResult<()>> + Send {
        let (fabric, name, owner, member) = (self.fabric.clone(), name.to_string(), owner.to_string(), self.id.clone());
        async move {
            fabric.locks.lock(&name, &owner, &member).await;
            Ok(())
        }
    }

    fn try_lock(&self, name: &str, owner: &str, timeout: Duration) -> impl Future<Output = PluginResult<bool>> + Send {
        crate::local::lock_within(timeout, self.lock(name, owner))
    }

    fn unlock(&self, name: &str, owner: &str) -> impl Future<Output = PluginResult<bool>> + Send {
        ready(Ok(self.fabric.locks.unlock(name, owner)))
    }

    fn lock_fence(&self, name: &str, owner: &str) -> impl Future<Output = PluginResult<Option<u64>>> + Send {
        ready(Ok(self.fabric.locks.fence(name, owner)))
    }

    fn send_task(
        &self,
        target: TaskTarget,
        name: &str,
        payload: Vec<u8>,
    ) -> impl Future<Output = PluginResult<()>> + Send {
        let (targets, _) = self.targets(&target);
        for (_, host) in targets {
            tokio::spawn(host.run_task(&self.id, name, payload.clone()));
        }
        ready(Ok(()))
    }

    fn call_task(
        &self,
        target: TaskTarget,
        name: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> impl Future<Output = PluginResult<Vec<TaskReply>>> + Send {
        let (targets, missing) = self.targets(&target);
        let calls: Vec<_> = targets
            .into_iter()
            .map(|(member, host)| {
                let run = host.run_task(&self.id, name, payload.clone());
                (member, tokio::spawn(tokio::time::timeout(timeout, run)))
            })
            .collect();
        async move {
            let mut replies = Vec::new();
            for (member, call) in calls {
                let outcome = match call.await {
                    Ok(Ok(Ok(value))) => TaskOutcome::Value(value),
                    Ok(Ok(Err(error))) => TaskOutcome::Error(error),
                    Ok(Err(_)) => TaskOutcome::TimedOut,
                    Err(join) => TaskOutcome::Error(format!("the call was lost: {join}")),
                };
                replies.push(TaskReply { member, outcome });
            }
            replies.extend(missing);
            Ok(replies)
        }
    }

    fn settings(&self) -> Vec<(String, String)> {
        self.with(|s| s.settings.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    fn put_setting(&self, key: &str, value: &str) -> impl Future<Output = PluginResult<()>> + Send {
        self.with(|s| {
            s.settings.insert(key.to_string(), value.to_string());
            // Settings reach every connected member, joined or not.
            let event = StrategyEvent::SettingChanged { key: key.to_string(), value: value.to_string() };
            let targets: Vec<ClusterHost> = s.members.values().map(|slot| slot.host.clone()).collect();
            s.outbox.extend(targets.into_iter().map(|host| (host, event.clone())));
        });
        ready(Ok(()))
    }

    fn stats(&self) -> Vec<(String, u64)> {
        let (evicted, expired) = self.caches().removed_by_bounds();
        let members = self.with(|s| joined_in_order(s).len() as u64);
        vec![("members".to_string(), members), ("cache_evictions".into(), evicted), ("cache_expiries".into(), expired)]
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::ATOMIC
            .with(Capabilities::ENTRY_EVENTS)
            .with(Capabilities::FENCED_LOCKS)
            .with(Capabilities::BOUNDED)
    }

    fn cache_configure(&self, cache: &str, bounds: CacheBounds) -> impl Future<Output = PluginResult<()>> + Send {
        self.write(|c| c.configure(cache, bounds));
        ready(Ok(()))
    }

    fn cache_put_ttl(
        &self,
        cache: &str,
        key: Vec<u8>,
        value: Vec<u8>,
        ttl: Duration,
    ) -> impl Future<Output = PluginResult<()>> + Send {
        let ttl_ms = millis(ttl);
        self.write(|c| c.put_ttl(cache, key, value, now_ms(), ttl_ms));
        ready(Ok(()))
    }

    fn cache_get_versioned(
        &self,
        cache: &str,
        key: &[u8],
    ) -> impl Future<Output = PluginResult<Option<Versioned>>> + Send {
        ready(Ok(self.caches().get_versioned(cache, key)))
    }

    fn cache_put_if_absent(
        &self,
        cache: &str,
        key: Vec<u8>,
        value: Vec<u8>,
    ) -> impl Future<Output = PluginResult<CasOutcome>> + Send {
        ready(Ok(self.write(|c| c.put_if_absent(cache, key, value, now_ms()))))
    }

    fn cache_replace_if(
        &self,
        cache: &str,
        key: Vec<u8>,
        expected: Expected,
        value: Vec<u8>,
    ) -> impl Future<Output = PluginResult<CasOutcome>> + Send {
        ready(Ok(self.write(|c| c.replace_if(cache, key, &expected, value, now_ms()))))
    }

    fn cache_remove_if(
        &self,
        cache: &str,
        key: Vec<u8>,
        expected: Expected,
    ) -> impl Future<Output = PluginResult<CasOutcome>> + Send {
        ready(Ok(self.write(|c| c.remove_if(cache, key, &expected))))
    }
}
