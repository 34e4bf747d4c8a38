//! How rules say what went wrong: a [`Failure`], made by `ensure!` and the
//! waits with deadlines, never a panic.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::cluster::ClusterError;

/// Why a rule did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The strategy broke the rule (the reason says how).
    Failed(String),
    /// The strategy does not offer a capability the rule needs.
    Unsupported(String),
}

impl Failure {
    pub fn failed(reason: impl Into<String>) -> Self {
        Failure::Failed(reason.into())
    }
}

/// The operations a strategy may answer `Unsupported` (locks and tasks);
/// every other one is required.
const OPTIONAL: [&str; 5] = ["lock", "try_lock", "unlock", "send_task", "call_task"];

impl From<ClusterError> for Failure {
    fn from(e: ClusterError) -> Self {
        match e {
            ClusterError::Unsupported { op, .. } if OPTIONAL.contains(&op) => Failure::Unsupported(e.to_string()),
            ClusterError::Unsupported { op, .. } => Failure::Failed(format!(
                "{e} (only locks and tasks are optional: {op} is required, see docs/strategy-authoring.md)"
            )),
            // An optional capability the strategy does not report.
            ClusterError::Lacks { .. } => Failure::Unsupported(e.to_string()),
            other => Failure::Failed(other.to_string()),
        }
    }
}

/// Fails the rule with a formatted reason unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($reason:tt)+) => {
        if !$cond {
            return Err($crate::conformance::Failure::Failed(format!($($reason)+)));
        }
    };
}

/// Fails the rule unless `left == right`, showing both.
macro_rules! ensure_eq {
    ($left:expr, $right:expr, $($reason:tt)+) => {{
        let (left, right) = (&$left, &$right);
        if left != right {
            return Err($crate::conformance::Failure::Failed(format!(
                "{}: got {:?}, expected {:?}", format!($($reason)+), left, right
            )));
        }
    }};
}

pub(crate) use {ensure, ensure_eq};

/// Polls `condition` every 10 ms until it holds; fails after `timeout`.
pub async fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) -> Result<(), Failure> {
    let deadline = Instant::now() + timeout;
    while !condition() {
        if Instant::now() >= deadline {
            return Err(Failure::failed(format!("timed out after {} s waiting for {what}", timeout.as_secs_f64())));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Awaits `condition` every 10 ms until it holds; fails after `timeout`
/// (for conditions that need I/O, such as a clustered cache's size).
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F) -> Result<(), Failure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        if Instant::now() >= deadline {
            return Err(Failure::failed(format!("timed out after {} s waiting for {what}", timeout.as_secs_f64())));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}
