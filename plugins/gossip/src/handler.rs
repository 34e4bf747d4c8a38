//! The data plane's requests from other members, each answered by the
//! job it belongs to (replication, the view, locks, tasks).

use std::future::ready;
use std::sync::Weak;
use std::time::Duration;

use crate::core::Core;
use crate::net::{BoxFuture, Handler};
use crate::wire::Msg;

/// Answers the data plane's requests. It holds the core weakly: the data
/// plane's tasks must not keep a stopped member alive.
pub(crate) struct Requests(pub Weak<Core>);

impl Handler for Requests {
    fn handle(&self, from: String, msg: Msg) -> BoxFuture<Option<Msg>> {
        let Some(core) = self.0.upgrade() else { return Box::pin(ready(None)) };
        Box::pin(async move {
            match msg {
                Msg::Replicate { req, entries } | Msg::TimedReplicate { req, entries } => {
                    core.replica.receive(entries);
                    core.locks.wake_waiters();
                    Some(Msg::Ack { req })
                }
                Msg::StateRequest { req } => Some(Msg::State { req, entries: core.replica.store.snapshot() }),
                Msg::StatePageRequest { req, after, max_bytes } => {
                    let (entries, more) = core.state_page(after, max_bytes);
                    Some(Msg::StatePage { req, entries, more })
                }
                Msg::TimedStatePageRequest { req, after, max_bytes } => {
                    let (entries, more) = core.state_page(after, max_bytes);
                    Some(Msg::TimedStatePage { req, entries, more })
                }
                Msg::Leaving { member, generation, epoch } => {
                    core.view.record_departure(member, generation, epoch);
                    None
                }
                Msg::Lock { req, name, owner, member, wait_ms } => {
                    let wait = wait_ms.map_or(crate::locks::SLICE, Duration::from_millis);
                    match core.grant(&name, &owner, &member, wait).await {
                        Ok(granted) => Some(Msg::LockReply { req, granted, error: None }),
                        Err(e) => Some(Msg::LockReply { req, granted: false, error: Some(e) }),
                    }
                }
                Msg::Unlock { req, name, owner } => {
                    let released = core.release(&name, &owner).await.unwrap_or(false);
                    Some(Msg::UnlockReply { req, released })
                }
                Msg::Cas { req, cache, key, op } => {
                    Some(Msg::CasReply { req, outcome: core.decide(&cache, key, op).await })
                }
                Msg::Task { req, name, payload, from: sender, fire_and_forget } => {
                    core.run_sent_task(req, sender, name, payload, fire_and_forget).await
                }
                other => {
                    tracing::debug!(from = %from, "ignored an unexpected message: {other:?}");
                    None
                }
            }
        })
    }
}
