//! The strategy contract suite: the rules every cluster strategy must keep
//! (docs/strategy-authoring.md names each), run on in-process members.
//! `clusterhost strategy verify` runs it against a plugin file; the
//! project's own tests (tests/tests/cluster_core.rs) run the same rules
//! against every strategy it ships.

mod broken;
mod check;
mod harness;
pub mod rules;

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use check::Failure;
pub use check::{wait_for, wait_until};
pub use harness::{
    free_member_port, quick_config, same_kind, use_port_allocator, Configure, Ctx, MemberSetup, Node, Nodes,
    PluginSubject, Subject,
};

/// One rule of the contract.
pub struct Rule {
    /// Its name, as docs/strategy-authoring.md and the verify command name it.
    pub name: &'static str,
    /// What it checks, in one line.
    pub summary: &'static str,
    /// Whether it needs only one member (it then also runs on the host's
    /// built-in standalone strategy).
    pub alone: bool,
    run: fn(Ctx) -> futures_like::BoxFuture<Result<(), Failure>>,
}

/// A boxed future without another dependency.
mod futures_like {
    pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;
}

/// How a rule ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "verdict", content = "reason", rename_all = "snake_case")]
pub enum Verdict {
    Passed,
    Failed(String),
    /// The strategy answered `Unsupported` for a capability the rule needs.
    Unsupported(String),
}

/// One rule's outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RuleReport {
    pub rule: &'static str,
    #[serde(flatten)]
    pub verdict: Verdict,
    pub seconds: f64,
}

/// The longest one rule may take before it counts as failed (hung).
pub const RULE_BUDGET: Duration = Duration::from_secs(120);

/// Every rule, in the order the suite runs them.
pub fn rules() -> &'static [Rule] {
    rules::ALL
}

/// The rule named `name`.
pub fn rule(name: &str) -> Option<&'static Rule> {
    rules().iter().find(|r| r.name == name)
}

impl Rule {
    /// Runs this rule against `ctx`'s subject, within [`RULE_BUDGET`]; a
    /// panic in the rule (or in what it calls) is a failure with its message.
    pub async fn run(&self, ctx: Ctx) -> RuleReport {
        let started = Instant::now();
        let verdict = if !self.alone && !ctx.subject.clusters() {
            Verdict::Unsupported("the built-in standalone strategy has no other members".into())
        } else {
            let task = tokio::spawn((self.run)(ctx));
            let abort = task.abort_handle();
            match tokio::time::timeout(RULE_BUDGET, task).await {
                Ok(Ok(Ok(()))) => Verdict::Passed,
                Ok(Ok(Err(Failure::Failed(reason)))) => Verdict::Failed(reason),
                Ok(Ok(Err(Failure::Unsupported(reason)))) => Verdict::Unsupported(reason),
                Ok(Err(join)) if join.is_panic() => {
                    Verdict::Failed(format!("panicked: {}", panic_text(join.into_panic())))
                }
                Ok(Err(join)) => Verdict::Failed(format!("the rule's task ended: {join}")),
                Err(_) => {
                    abort.abort();
                    Verdict::Failed(format!("did not finish within {} s (something hung)", RULE_BUDGET.as_secs()))
                }
            }
        };
        RuleReport { rule: self.name, verdict, seconds: started.elapsed().as_secs_f64() }
    }
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload.downcast_ref::<&str>().map(|s| s.to_string()).unwrap_or_else(|| "a panic".into()),
    }
}

/// Runs `selected` rules (every rule when empty) one after another,
/// calling `each` as each ends.
pub async fn run(
    subject: Arc<Subject>,
    members: usize,
    selected: &[String],
    mut each: impl FnMut(&RuleReport),
) -> Vec<RuleReport> {
    let mut reports = Vec::new();
    for rule in rules().iter().filter(|r| selected.is_empty() || selected.iter().any(|s| s == r.name)) {
        let report = rule.run(Ctx::new(subject.clone(), members)).await;
        each(&report);
        reports.push(report);
    }
    reports
}
