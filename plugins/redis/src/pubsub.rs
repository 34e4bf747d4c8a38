//! The pub/sub side: one subscriber connection for the events channel,
//! this member's task and reply channels, and the entries channel (entry
//! events) while this member's host listens to some cache
//! (crate::listening), following the command connection after a
//! failover; notices in, and notices out.

use std::sync::{Arc, Weak};

use futures_util::StreamExt;

use crate::conn;
use crate::core::Core;

impl Core {
    /// Keeps a pub/sub connection subscribed to the events and entries
    /// channels and this member's task and reply channels, following the command connection
    /// to a new server after a reset.
    pub(crate) async fn pubsub_loop(weak: Weak<Core>) {
        let mut reported = String::new();
        loop {
            let Some(core) = weak.upgrade() else { return };
            let config = core.config.clone();
            let channels = [core.keys.events(), core.keys.tasks(&core.member), core.keys.replies(&core.member)];
            let epoch = core.link.epoch();
            drop(core);
            match conn::pubsub(&config).await {
                Ok(pubsub) => {
                    let (mut sink, mut messages) = pubsub.split();
                    let subscribed = async {
                        for channel in &channels {
                            sink.subscribe(channel).await?;
                        }
                        // The entries channel too, while this member's host listens.
                        match weak.upgrade() {
                            Some(core) => core.pubsub_up(sink).await,
                            None => Ok(()),
                        }
                    };
                    if let Err(e) = subscribed.await {
                        tracing::warn!("could not subscribe to the cluster channels: {e}");
                    } else {
                        reported.clear();
                        if let Some(core) = weak.upgrade() {
                            // Notices may have been missed: re-read now.
                            core.wake.notify_one();
                            core.reload_all_bounds();
                        }
                        let mut check = tokio::time::interval(config.heartbeat());
                        loop {
                            tokio::select! {
                                message = messages.next() => {
                                    let Some(message) = message else {
                                        tracing::warn!("the pub/sub connection to Redis closed; reconnecting");
                                        break;
                                    };
                                    let Some(core) = weak.upgrade() else { return };
                                    core.on_message(message.get_channel_name(), message.get_payload_bytes());
                                }
                                _ = check.tick() => {
                                    let Some(core) = weak.upgrade() else { return };
                                    if core.link.epoch() != epoch {
                                        // The command connection moved (failover): follow it.
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    if let Some(core) = weak.upgrade() {
                        core.pubsub_down().await;
                    }
                }
                Err(e) => {
                    let e = e.to_string();
                    if e != reported {
                        tracing::warn!("pub/sub: {e}; retrying");
                        reported = e;
                    }
                }
            }
            tokio::time::sleep(config.heartbeat()).await;
        }
    }

    /// A message on a subscribed channel.
    fn on_message(self: &Arc<Self>, channel: &str, payload: &[u8]) {
        if channel == self.keys.events() {
            let text = String::from_utf8_lossy(payload);
            if text.starts_with("unlocked\n") {
                self.locks.wake_waiters();
            } else if let Some(cache) = text.strip_prefix("layout\n") {
                // A spread cache was gathered onto one partition.
                self.forget_layout(cache);
            } else if let Some(cache) = text.strip_prefix("bounds\n") {
                // A member changed a cache's bounds: read them again.
                let (core, cache) = (self.clone(), cache.to_string());
                tokio::spawn(async move { core.reload_bounds(&cache).await });
            } else {
                self.wake.notify_one();
            }
            return;
        }
        if channel == self.keys.entries() {
            self.on_entry_event(payload);
            return;
        }
        self.on_task_message(channel, payload);
    }

    /// A change published by a writing script (any member's, this one's
    /// included), checked before it is told to the host.
    fn on_entry_event(&self, payload: &[u8]) {
        match crate::entry_events::decode(payload) {
            Some(event) => {
                if let Some(host) = self.host() {
                    host.emit_cache_event(event);
                }
            }
            None => {
                self.storage.refused_events.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::debug!(bytes = payload.len(), "dropped a malformed or oversized entry event");
            }
        }
    }

    /// Announces a change on `P:events` (`joined`, `left`, `setting`,
    /// `unlocked`); a lost notice is only a delay, as every member re-reads
    /// on its heartbeat.
    pub(crate) async fn publish_event(&self, event: &str) {
        if let Err(e) = self.query::<i64>(redis::cmd("PUBLISH").arg(self.keys.events()).arg(event)).await {
            tracing::debug!("could not publish {event:?}: {e}");
        }
    }
}
