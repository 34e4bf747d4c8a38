//! Tasks: the handlers this node registered, and sending and calling tasks
//! through the serving strategy, with one answer per target member.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clusterhost_plugin_api::cluster::{TaskOutcome, TaskReply, TaskTarget};
use clusterhost_plugin_api::membership::resolve_target;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::task_stats::{TaskCounters, TaskStats};
use super::{lock, ClusterError, ClusterManager};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Handler = Arc<dyn Fn(String, Vec<u8>) -> BoxFuture<Result<Vec<u8>, String>> + Send + Sync>;

/// One member's answer to a typed task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskResult<T> {
    /// The member that answered (or did not).
    pub member: String,
    /// Its value, or why there is none.
    pub outcome: Result<T, TaskFailure>,
}

/// Why a member gave no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskFailure {
    #[error("{0}")]
    Error(String),
    #[error("timed out (cluster.max.execution.seconds)")]
    TimedOut,
}

/// The node's task handlers and counters: whichever strategy serves, a task
/// that reaches this node runs here, on the host's runtime.
pub(crate) struct Tasks {
    /// This node's member id, for messages.
    node: String,
    /// Handlers by task name; a later registration replaces an earlier one.
    handlers: Mutex<HashMap<String, Handler>>,
    /// The host's runtime: handlers run there, so a panicking one is contained
    /// and a plugin only awaits the answer.
    runtime: tokio::runtime::Handle,
    /// What this node sent and called, for metrics.
    counters: TaskCounters,
}

impl Tasks {
    pub(crate) fn new(node: &str, runtime: tokio::runtime::Handle) -> Self {
        Tasks { node: node.to_string(), handlers: Mutex::default(), runtime, counters: TaskCounters::default() }
    }

    /// Runs the handler for `name`, sent by `from`, on the host's runtime.
    pub(crate) fn run_local(&self, from: String, name: &str, payload: Vec<u8>) -> BoxFuture<Result<Vec<u8>, String>> {
        let handler = lock(&self.handlers).get(name).cloned();
        let node = self.node.clone();
        let name = name.to_string();
        let runtime = self.runtime.clone();
        Box::pin(async move {
            let Some(handler) = handler else {
                return Err(format!("no handler for task {name} on member {node}; register it on every member"));
            };
            match runtime.spawn(handler(from, payload)).await {
                Ok(result) => result,
                Err(e) if e.is_panic() => Err(format!("the handler for task {name} panicked on member {node}")),
                Err(e) => Err(format!("the handler for task {name} on member {node} was cancelled: {e}")),
            }
        })
    }

    /// Runs the handler for `name` without waiting for it.
    pub(crate) fn spawn_local(&self, from: String, name: &str, payload: Vec<u8>) {
        self.runtime.spawn(self.run_local(from, name, payload));
    }
}

impl ClusterManager {
    /// Registers the handler for task `name` (replacing an earlier one).
    pub fn register_task_raw<F, Fut>(&self, name: &str, handler: F)
    where
        F: Fn(String, Vec<u8>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<u8>, String>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |from, payload| Box::pin(handler(from, payload)));
        lock(&self.shared.tasks.handlers).insert(name.to_string(), handler);
    }

    /// Registers a typed handler: requests and replies are encoded with postcard.
    pub fn register_task<Req, Resp, F, Fut>(&self, name: &str, handler: F)
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + 'static,
        F: Fn(Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, String>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let task = name.to_string();
        self.register_task_raw(name, move |_from, payload| {
            let handler = handler.clone();
            let task = task.clone();
            async move {
                let request: Req = postcard::from_bytes(&payload)
                    .map_err(|e| format!("task {task}: could not decode the request: {e}"))?;
                let reply = handler(request).await?;
                postcard::to_allocvec(&reply).map_err(|e| format!("task {task}: could not encode the reply: {e}"))
            }
        });
    }

    /// Counters of the tasks this node sent and called.
    pub fn task_stats(&self) -> TaskStats {
        self.shared.tasks.counters.snapshot()
    }

    /// Sends a task without waiting for it to run.
    pub async fn send_task_raw(&self, target: TaskTarget, name: &str, payload: Vec<u8>) -> Result<(), ClusterError> {
        self.shared.tasks.counters.sent();
        self.serving().send_task(target, name, payload).await
    }

    /// Runs a task on the target members and waits at most
    /// `cluster.max.execution.seconds`: one reply per member (value, error
    /// or timed out), never a silently partial answer.
    pub async fn call_task_raw(
        &self,
        target: TaskTarget,
        name: &str,
        payload: Vec<u8>,
    ) -> Result<Vec<TaskReply>, ClusterError> {
        let budget = self.config().max_execution;
        // A little grace over the budget for the strategy to collect its
        // replies; past that every missing member counts as timed out.
        let wait = budget + Duration::from_millis(500).min(budget);
        self.call_task_counted(target, name, payload, budget, wait).await
    }

    /// As [`call_task_raw`](Self::call_task_raw), answered by `deadline`
    /// (when that comes before `cluster.max.execution.seconds`): a caller
    /// that answers by a deadline of its own (the admin's member details)
    /// gets every reply that came, and `TimedOut` for the rest, instead of
    /// dropping the call and with it the replies it already had.
    pub async fn call_task_raw_by(
        &self,
        target: TaskTarget,
        name: &str,
        payload: Vec<u8>,
        deadline: Instant,
    ) -> Result<Vec<TaskReply>, ClusterError> {
        let wait = deadline.saturating_duration_since(Instant::now()).min(self.config().max_execution);
        // The strategy's own budget ends a little earlier, so its replies
        // (and its own TimedOut ones) are back by the deadline.
        let budget = wait - (wait / 5).min(Duration::from_millis(200));
        self.call_task_counted(target, name, payload, budget, wait).await
    }

    async fn call_task_counted(
        &self,
        target: TaskTarget,
        name: &str,
        payload: Vec<u8>,
        budget: Duration,
        wait: Duration,
    ) -> Result<Vec<TaskReply>, ClusterError> {
        let started = Instant::now();
        let replies = self.call_task_uncounted(target, name, payload, budget, wait).await?;
        let count = |f: fn(&TaskOutcome) -> bool| replies.iter().filter(|r| f(&r.outcome)).count() as u64;
        self.shared.tasks.counters.called(
            started.elapsed(),
            count(|o| matches!(o, TaskOutcome::Value(_))),
            count(|o| matches!(o, TaskOutcome::Error(_))),
            count(|o| matches!(o, TaskOutcome::TimedOut)),
        );
        Ok(replies)
    }

    async fn call_task_uncounted(
        &self,
        target: TaskTarget,
        name: &str,
        payload: Vec<u8>,
        budget: Duration,
        wait: Duration,
    ) -> Result<Vec<TaskReply>, ClusterError> {
        let strategy = self.serving();
        // The members the answer must cover, as the strategy sees them now
        // (none for standalone, which answers for itself), and a member
        // named whether the view lists it or not.
        let members = strategy.members().into_iter().map(|m| m.id);
        let senior = strategy.senior_member();
        let expected = resolve_target(&target, &self.shared.node, members, senior.as_deref())
            .unwrap_or_else(|missing| vec![missing.member().to_string()]);
        let mut replies = match tokio::time::timeout(wait, strategy.call_task(target, name, payload, budget)).await {
            Ok(replies) => replies?,
            Err(_) => Vec::new(),
        };
        for member in expected {
            if !replies.iter().any(|r| r.member == member) {
                replies.push(TaskReply { member, outcome: TaskOutcome::TimedOut });
            }
        }
        Ok(replies)
    }

    /// Typed form of [`call_task_raw`](Self::call_task_raw).
    pub async fn call_task<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        target: TaskTarget,
        name: &str,
        request: &Req,
    ) -> Result<Vec<TaskResult<Resp>>, ClusterError> {
        let payload = postcard::to_allocvec(request)
            .map_err(|e| ClusterError::TaskCodec { task: name.to_string(), detail: e.to_string() })?;
        let replies = self.call_task_raw(target, name, payload).await?;
        Ok(replies
            .into_iter()
            .map(|r| TaskResult {
                member: r.member,
                outcome: match r.outcome {
                    TaskOutcome::Value(bytes) => postcard::from_bytes(&bytes)
                        .map_err(|e| TaskFailure::Error(format!("could not decode the reply: {e}"))),
                    TaskOutcome::Error(e) => Err(TaskFailure::Error(e)),
                    TaskOutcome::TimedOut => Err(TaskFailure::TimedOut),
                },
            })
            .collect())
    }
}
