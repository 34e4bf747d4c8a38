//! Tasks member to member: a task's target resolved against the view, run
//! here through the host or sent to the member on the data plane.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clusterhost_plugin_api::cluster::{TaskOutcome, TaskReply, TaskTarget};
use clusterhost_plugin_api::membership::resolve_target;
use clusterhost_plugin_api::PluginResult;

use crate::core::Core;
use crate::net::NetError;
use crate::wire::Msg;

/// The members a task goes to, with their data-plane addresses.
pub(crate) type Targets = Vec<(String, Option<SocketAddr>)>;

impl Core {
    /// The members of `target` in the view, and an error reply for the
    /// one named that is not in it.
    pub(crate) fn targets(&self, target: &TaskTarget) -> (Targets, Vec<TaskReply>) {
        let view = self.view.current();
        match resolve_target(target, &self.member, view.members.keys(), view.senior.as_deref()) {
            Ok(ids) => {
                let found = ids.into_iter().map(|id| {
                    let addr = view.members.get(&id).and_then(|p| p.data_addr);
                    (id, addr)
                });
                (found.collect(), Vec::new())
            }
            Err(missing) => (Vec::new(), vec![missing.into_reply()]),
        }
    }

    /// Runs task `name` on every one of `targets` without waiting for it.
    pub(crate) async fn send_task(
        self: Arc<Self>,
        targets: Targets,
        name: String,
        payload: Vec<u8>,
    ) -> PluginResult<()> {
        for (id, addr) in targets {
            if id == self.member {
                if let Some(host) = self.host() {
                    tokio::spawn(host.run_task(&self.member, &name, payload.clone()));
                }
            } else if let Some(addr) = addr {
                let msg = Msg::Task {
                    req: 0,
                    name: name.clone(),
                    payload: payload.clone(),
                    from: self.member.clone(),
                    fire_and_forget: true,
                };
                if let Err(e) = self.net.send(&id, addr, msg, self.config.operation_timeout()).await {
                    tracing::warn!("task {name} not delivered to {id}: {e}");
                }
            }
        }
        Ok(())
    }

    /// Runs task `name` on every one of `targets` and collects their
    /// replies, then those of `missing`.
    pub(crate) async fn call_task(
        self: Arc<Self>,
        targets: Targets,
        missing: Vec<TaskReply>,
        name: String,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> PluginResult<Vec<TaskReply>> {
        let mut calls = tokio::task::JoinSet::new();
        for (id, addr) in targets {
            let run = self.clone().run_one(id.clone(), addr, name.clone(), payload.clone(), timeout);
            calls.spawn(async move { TaskReply { member: id, outcome: run.await } });
        }
        let mut replies: Vec<TaskReply> = Vec::new();
        while let Some(done) = calls.join_next().await {
            if let Ok(reply) = done {
                replies.push(reply);
            }
        }
        replies.extend(missing);
        Ok(replies)
    }

    async fn run_one(
        self: Arc<Self>,
        id: String,
        addr: Option<SocketAddr>,
        name: String,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> TaskOutcome {
        if id == self.member {
            let Some(host) = self.host() else { return TaskOutcome::Error("the host is not connected".into()) };
            return match tokio::time::timeout(timeout, host.run_task(&self.member, &name, payload)).await {
                Ok(Ok(v)) => TaskOutcome::Value(v),
                Ok(Err(e)) => TaskOutcome::Error(e),
                Err(_) => TaskOutcome::TimedOut,
            };
        }
        let Some(addr) = addr else { return TaskOutcome::Error(format!("member {id} has no data address")) };
        let req = self.net.next_req();
        let msg = Msg::Task { req, name, payload, from: self.member.clone(), fire_and_forget: false };
        match self.net.request(&id, addr, msg, req, timeout).await {
            Ok(Msg::TaskReply { outcome: Ok(v), .. }) => TaskOutcome::Value(v),
            Ok(Msg::TaskReply { outcome: Err(e), .. }) => TaskOutcome::Error(e),
            Ok(_) => TaskOutcome::Error("unexpected answer".into()),
            Err(NetError::Timeout { .. }) => TaskOutcome::TimedOut,
            Err(e) => TaskOutcome::Error(e.to_string()),
        }
    }

    /// Runs the task another member sent (`req` 0 and no reply when it
    /// does not wait); `None` while the host is not connected.
    pub(crate) async fn run_sent_task(
        &self,
        req: u64,
        sender: String,
        name: String,
        payload: Vec<u8>,
        fire_and_forget: bool,
    ) -> Option<Msg> {
        let host = self.host()?;
        let run = host.run_task(&sender, &name, payload);
        if fire_and_forget {
            tokio::spawn(run);
            return None;
        }
        Some(Msg::TaskReply { req, outcome: run.await })
    }
}
