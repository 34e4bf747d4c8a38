//! Who listens to which cache. A cache's changes are published (entry
//! events) only while its `{T}:listeners` hash exists: each member whose
//! host listens to the cache holds a field there, set when the host tells
//! it (`cache_listen`, awaited by the host's `listen`, so every change
//! made after that call returns is published) and at every join, kept
//! alive every heartbeat (the hash expires 2 × `member_ttl_ms` after the
//! last refresh, so a member that died stops costing publishes), and
//! removed once the host's `cache_listened` says no or the member leaves.
//! A member subscribes to the entries channel before it announces
//! anything, and only while its host listens to some cache.
//!
//! A member of an earlier version of this plugin announces nothing and
//! expects every change published: while one is in the cluster (its
//! record lacks `announces`), every member publishes every change.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use redis::aio::PubSubSink;

use crate::core::{lock, Core};
use crate::error::Error;

/// How long a join waits for the pub/sub connection before it announces
/// this member's listened caches (the heartbeat does it later otherwise).
const PUBSUB_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// This member's side of it. Part of [`Core`].
#[derive(Default)]
pub(crate) struct Listening {
    /// The caches this member's host listens to, as it told: a cache
    /// leaves once the host's `cache_listened` says no.
    wanted: Mutex<BTreeSet<String>>,
    /// The pub/sub connection's sink while it is up, and whether it is
    /// subscribed to the entries channel. Held across a subscribe, so
    /// two never cross.
    sink: tokio::sync::Mutex<Option<(PubSubSink, bool)>>,
    /// Some member does not announce its listeners (an earlier version):
    /// every change is published.
    publish_all: AtomicBool,
    /// Taken by a `cache_listen` and by the heartbeat's withdrawals, so a
    /// withdrawal decided just before a new listener registered cannot
    /// land after that listener's announcement.
    turn: tokio::sync::Mutex<()>,
}

impl Core {
    /// Whether every change is published, listened or not.
    pub(crate) fn publishes_all(&self) -> bool {
        self.listening.publish_all.load(Ordering::Relaxed)
    }

    /// Sets whether every change is published (a member that announces
    /// no listeners is in the view).
    pub(crate) fn set_publish_all(&self, all: bool) {
        if self.listening.publish_all.swap(all, Ordering::Relaxed) != all && all {
            tracing::info!("a member of an earlier version of the redis strategy is in the cluster: every cache change is published until it leaves");
        }
    }

    /// `cache_listen`: this member's host listens to `cache`. While
    /// joined, returns once the entries channel is subscribed to and the
    /// interest is in Redis, so every change made from then on, by any
    /// member, is published; otherwise it is announced at the join.
    pub(crate) async fn cache_listen(&self, cache: &str) -> Result<(), Error> {
        let _turn = self.listening.turn.lock().await;
        lock(&self.listening.wanted).insert(cache.to_string());
        if !self.in_cluster() {
            return Ok(());
        }
        self.subscribe_entries().await?;
        self.announce(cache).await
    }

    /// The pub/sub connection's sink, once it is up (the pub/sub loop
    /// hands it over), subscribed to the entries channel if any cache is
    /// listened to; announces every listened cache.
    pub(crate) async fn pubsub_up(&self, sink: PubSubSink) -> redis::RedisResult<()> {
        {
            let mut held = self.listening.sink.lock().await;
            let mut sink = sink;
            let subscribe = !lock(&self.listening.wanted).is_empty();
            if subscribe {
                sink.subscribe(self.keys.entries()).await?;
            }
            *held = Some((sink, subscribe));
        }
        if self.in_cluster() {
            self.announce_wanted().await;
        }
        Ok(())
    }

    /// The pub/sub connection is gone: nothing is heard until it is back.
    pub(crate) async fn pubsub_down(&self) {
        *self.listening.sink.lock().await = None;
    }

    async fn subscribe_entries(&self) -> Result<(), Error> {
        let mut held = self.listening.sink.lock().await;
        match &mut *held {
            Some((_, true)) => Ok(()),
            Some((sink, subscribed)) => {
                sink.subscribe(self.keys.entries())
                    .await
                    .map_err(|e| Error::Command { urls: self.config.urls.join(", "), source: e })?;
                *subscribed = true;
                Ok(())
            }
            None => Err(Error::NoPubSub { urls: self.config.urls.join(", ") }),
        }
    }

    /// Whether the entries channel is subscribed to now.
    async fn subscribed(&self) -> bool {
        matches!(&*self.listening.sink.lock().await, Some((_, true)))
    }

    /// Puts this member's interest in `cache` into Redis (or refreshes it).
    /// Each partition of a spread cache has its own `listeners` (its
    /// scripts read it on its slot); announcing records the cache's layout.
    /// While a cache is gathered onto one partition, its old partitions
    /// too (a member still on the old layout may write there). Checked
    /// once more after: a gather that began meanwhile may have carried
    /// the listeners over before this announcement landed.
    async fn announce(&self, cache: &str) -> Result<(), Error> {
        let ttl = self.config.membership.member_ttl_ms * 2;
        for _ in 0..3 {
            let layout = self.layout_to_write(cache).await?;
            let parts: Vec<&crate::partitions::Part> =
                layout.parts.iter().chain(layout.from.iter().flatten()).filter(|p| !p.plain).collect();
            // A plain partition's changes are always published (no key beside its hash).
            let calls = parts.into_iter().map(|part| async move {
                let mut pipe = redis::pipe();
                pipe.cmd("HSET").arg(&part.keys[1]).arg(&self.member).arg(1).ignore();
                pipe.cmd("PEXPIRE").arg(&part.keys[1]).arg(ttl).ignore();
                self.pipe::<()>(&pipe).await
            });
            futures_util::future::try_join_all(calls).await?;
            if self.layout_still(cache, &layout).await? {
                return Ok(());
            }
            self.forget_layout(cache);
        }
        Ok(())
    }

    /// Takes this member's interest in `cache` out of Redis.
    async fn withdraw(&self, cache: &str) {
        let withdrawn = async {
            let layout = self.layout(cache, None).await?;
            self.each_part(&layout, |_, part| async move {
                match part.plain {
                    true => Ok(0),
                    false => self.query::<i64>(redis::cmd("HDEL").arg(&part.keys[1]).arg(&self.member)).await,
                }
            })
            .await
        };
        if let Err(e) = withdrawn.await {
            tracing::debug!(cache, "could not withdraw this member's interest in the cache (it expires): {e}");
        }
    }

    /// At a join, and when pub/sub is back: every listened cache
    /// announced, once the entries channel is subscribed to.
    pub(crate) async fn announce_wanted(&self) {
        let wanted: Vec<String> = lock(&self.listening.wanted).iter().cloned().collect();
        if wanted.is_empty() {
            return;
        }
        // A join can come before the pub/sub connection is up (it is made
        // beside the join): wait for it a little, so the host hears of the
        // join only once changes reach its listeners; past that, the
        // heartbeat announces them once it is up.
        let deadline = tokio::time::Instant::now() + PUBSUB_WAIT;
        let subscribed = loop {
            match self.subscribe_entries().await {
                Err(Error::NoPubSub { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await
                }
                other => break other,
            }
        };
        if let Err(e) = subscribed {
            tracing::warn!("listened caches wait for the pub/sub connection: {e}");
            return;
        }
        for cache in wanted {
            if let Err(e) = self.announce(&cache).await {
                tracing::warn!(cache = %cache, "could not announce this member's listener in Redis (retried every heartbeat): {e}");
            }
        }
    }

    /// Every heartbeat: a cache the host no longer listens to is
    /// withdrawn; the others' announcements are refreshed (made, if the
    /// subscription was missing at the join); with none left, the
    /// entries channel is unsubscribed.
    pub(crate) async fn beat_listeners(&self) {
        let Some(host) = self.host() else { return };
        let _turn = self.listening.turn.lock().await;
        let wanted: Vec<String> = lock(&self.listening.wanted).iter().cloned().collect();
        if wanted.is_empty() {
            return;
        }
        let joined = self.in_cluster();
        let mut gone = Vec::new();
        for cache in wanted {
            if !host.cache_listened(&cache) {
                if joined {
                    self.withdraw(&cache).await;
                }
                gone.push(cache);
            } else if joined && (self.subscribed().await || self.subscribe_entries().await.is_ok()) {
                if let Err(e) = self.announce(&cache).await {
                    tracing::debug!(cache = %cache, "could not refresh this member's listener in Redis: {e}");
                }
            }
        }
        let none_left = {
            let mut wanted = lock(&self.listening.wanted);
            for cache in &gone {
                wanted.remove(cache);
            }
            wanted.is_empty()
        };
        if none_left {
            let mut held = self.listening.sink.lock().await;
            if let Some((sink, subscribed @ true)) = &mut *held {
                match sink.unsubscribe(self.keys.entries()).await {
                    Ok(()) => *subscribed = false,
                    Err(e) => tracing::debug!("could not unsubscribe from the entries channel: {e}"),
                }
            }
        }
    }

    /// A clean leave: this member's interests out of Redis.
    pub(crate) async fn withdraw_all(&self) {
        let wanted: Vec<String> = lock(&self.listening.wanted).iter().cloned().collect();
        for cache in wanted {
            self.withdraw(&cache).await;
        }
    }
}
