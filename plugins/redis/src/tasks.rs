//! Tasks between members over pub/sub: a request on the target's
//! `P:task:<member>` channel, the answer on the sender's `P:reply:<member>`;
//! resolving a target to members, running incoming tasks on the host.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clusterhost_plugin_api::cluster::{TaskOutcome, TaskReply, TaskTarget};
use clusterhost_plugin_api::membership::resolve_target;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::core::{lock, Core};
use crate::error::Error;

/// Messages on the task and reply channels.
#[doc(hidden)] // pub for the fuzz targets (fuzz/)
#[derive(Debug, Serialize, Deserialize)]
pub enum Wire {
    /// A task for the channel's member; `id` names the call its reply answers.
    Task { id: u64, from: String, name: String, payload: Vec<u8>, reply: bool },
    /// A member's answer to call `id`: its value, or its error text.
    Reply { id: u64, member: String, ok: bool, body: Vec<u8> },
}

/// Task calls out and in. Part of [`Core`].
pub(crate) struct Tasks {
    /// Calls waiting for replies: call id -> where the replies go.
    pending: Mutex<HashMap<u64, mpsc::UnboundedSender<(String, TaskOutcome)>>>,
    /// The next call's id; replies come back on this member's own channel,
    /// so ids need only be unique here.
    next_id: AtomicU64,
    /// Handlers of incoming tasks, aborted when the plugin stops.
    incoming: Mutex<JoinSet<()>>,
    /// Task messages published (the `tasks_sent` stat).
    sent: AtomicU64,
    /// Tasks received (the `tasks_received` stat).
    received: AtomicU64,
}

impl Tasks {
    /// No calls yet; call ids start at 1 (0 marks a task without reply).
    pub(crate) fn new() -> Tasks {
        Tasks {
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            incoming: Mutex::new(JoinSet::new()),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
        }
    }

    /// Stops the handlers of incoming tasks (the plugin stops).
    pub(crate) fn abort_incoming(&self) {
        lock(&self.incoming).abort_all();
    }

    /// Task messages published so far.
    pub(crate) fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Tasks received so far.
    pub(crate) fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Core {
    /// The members `target` names that are in the view, and a reply for
    /// the one named that is not.
    pub(crate) fn targets(&self, target: &TaskTarget) -> (Vec<String>, Vec<TaskReply>) {
        let view = self.view();
        match resolve_target(target, &self.member, view.ids(), view.senior.as_deref()) {
            Ok(found) => (found, Vec::new()),
            Err(missing) => (Vec::new(), vec![missing.into_reply()]),
        }
    }

    async fn publish_task(&self, to: &str, msg: &Wire) -> Result<(), Error> {
        let bytes = postcard::to_allocvec(msg).map_err(Error::EncodeTask)?;
        self.tasks.sent.fetch_add(1, Ordering::Relaxed);
        // Sent once: a task is not idempotent.
        let publish = redis::cmd("PUBLISH").arg(self.keys.tasks(to)).arg(bytes).clone();
        let publish = &publish;
        self.send(false, |mut conn| async move { publish.query_async::<i64>(&mut conn).await }).await.map(|_| ())
    }

    /// Sends a task to each of `targets`, expecting no answer; a member it
    /// could not be sent to is logged.
    pub(crate) async fn send_task(&self, targets: Vec<String>, name: &str, payload: Vec<u8>) {
        for id in targets {
            let msg = Wire::Task {
                id: 0,
                from: self.member.clone(),
                name: name.to_string(),
                payload: payload.clone(),
                reply: false,
            };
            if let Err(e) = self.publish_task(&id, &msg).await {
                tracing::warn!("task {name} not delivered to {id}: {e}");
            }
        }
    }

    /// Sends a task to each of `targets` and waits up to `timeout` for their
    /// answers: one reply per target (`TimedOut` if none came), then `missing`.
    pub(crate) async fn call_task(
        &self,
        targets: Vec<String>,
        missing: Vec<TaskReply>,
        name: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Vec<TaskReply> {
        let id = self.tasks.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::unbounded_channel();
        lock(&self.tasks.pending).insert(id, tx);
        let mut outcomes: BTreeMap<String, TaskOutcome> = BTreeMap::new();
        for to in &targets {
            let msg = Wire::Task {
                id,
                from: self.member.clone(),
                name: name.to_string(),
                payload: payload.clone(),
                reply: true,
            };
            if let Err(e) = self.publish_task(to, &msg).await {
                outcomes.insert(to.clone(), TaskOutcome::Error(e.to_string()));
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        while outcomes.len() < targets.len() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((member, outcome))) if targets.contains(&member) => {
                    outcomes.entry(member).or_insert(outcome);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        lock(&self.tasks.pending).remove(&id);
        let mut replies: Vec<TaskReply> = targets
            .into_iter()
            .map(|member| {
                let outcome = outcomes.remove(&member).unwrap_or(TaskOutcome::TimedOut);
                TaskReply { member, outcome }
            })
            .collect();
        replies.extend(missing);
        replies
    }

    /// A message on this member's task or reply channel: runs a task on the
    /// host (answering it when asked), or hands a reply to its waiting call.
    pub(crate) fn on_task_message(self: &Arc<Self>, channel: &str, payload: &[u8]) {
        match postcard::from_bytes::<Wire>(payload) {
            Ok(Wire::Task { id, from, name, payload, reply }) => {
                self.tasks.received.fetch_add(1, Ordering::Relaxed);
                let Some(host) = self.host() else { return };
                let core = self.clone();
                let mut incoming = lock(&self.tasks.incoming);
                while incoming.try_join_next().is_some() {}
                incoming.spawn(async move {
                    let outcome = host.run_task(&from, &name, payload).await;
                    if reply {
                        let (ok, body) = match outcome {
                            Ok(value) => (true, value),
                            Err(e) => (false, e.into_bytes()),
                        };
                        let msg = Wire::Reply { id, member: core.member.clone(), ok, body };
                        if let Ok(bytes) = postcard::to_allocvec(&msg) {
                            let publish = redis::cmd("PUBLISH").arg(core.keys.replies(&from)).arg(bytes).clone();
                            if let Err(e) = core.query::<i64>(&publish).await {
                                tracing::warn!("could not answer task {name} from {from}: {e}");
                            }
                        }
                    }
                });
            }
            Ok(Wire::Reply { id, member, ok, body }) => {
                let outcome = if ok {
                    TaskOutcome::Value(body)
                } else {
                    TaskOutcome::Error(String::from_utf8_lossy(&body).into())
                };
                if let Some(tx) = lock(&self.tasks.pending).get(&id) {
                    let _ = tx.send((member, outcome));
                }
            }
            Err(e) => tracing::warn!("ignored a message on {channel} this version cannot read: {e}"),
        }
    }
}
