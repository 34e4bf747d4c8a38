//! What a load of a plugin file ends in: its outcome, or why it was
//! refused; and the report of it kept for those waiting on that file.

use std::path::PathBuf;

use semver::Version;
use serde::{Deserialize, Serialize};

use super::loader::{AbiError, LifecycleCall, LifecycleError};
use super::manifest::InspectError;
use super::registry::{AdmissionError, PluginState};
use super::signature::SignatureError;

/// Why a plugin was not put into service.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Inspect(#[from] InspectError),
    #[error(
        "could not copy {path} to the node's private plugin directory: {source}; check that the file is readable and that the temp directory ($TMPDIR) has space"
    )]
    Copy { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error(transparent)]
    Admission(#[from] AdmissionError),
    #[error(transparent)]
    Abi(#[from] AbiError),
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
}

impl LoadError {
    /// The state a plugin refused with this error ends in.
    pub fn state(&self) -> PluginState {
        match self {
            LoadError::Lifecycle(_) => PluginState::Faulted,
            _ => PluginState::Rejected,
        }
    }

    /// Whether the refusal happened before the library was mapped, i.e.
    /// without running any of the plugin's code.
    pub fn before_dlopen(&self) -> bool {
        matches!(
            self,
            LoadError::Inspect(_) | LoadError::Copy { .. } | LoadError::Signature(_) | LoadError::Admission(_)
        )
    }
}

/// What a successful `load` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadOutcome {
    /// A new plugin is active.
    Activated { id: String, version: Version },
    /// The same id and version was already active; nothing changed.
    Unchanged { id: String, version: Version },
    /// The plugin with this id was replaced by the new version.
    Replaced { id: String, from: Version, to: Version },
}

/// Why a load was refused, in the terms a caller acts on (the message
/// says the rest): refused before it ran, failed in its start, or faulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalCause {
    /// Refused by its file, manifest, signature, admission or ABI, before it was started.
    Rejected,
    /// Its start returned an error (or gave no strategy): often a resource
    /// the version it replaces had not released yet, so worth one retry.
    FailedInStart,
    /// It panicked, hung, or failed in create or stop.
    Faulted,
}

impl LoadError {
    /// The cause a caller acts on.
    pub fn cause(&self) -> RefusalCause {
        match self {
            LoadError::Lifecycle(LifecycleError::Failed { phase: LifecycleCall::Start, .. }) => {
                RefusalCause::FailedInStart
            }
            LoadError::Lifecycle(_) => RefusalCause::Faulted,
            _ => RefusalCause::Rejected,
        }
    }
}

/// How the last load of a file ended, kept per file in the registry so a
/// caller that published the file (the admin API) can tell its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// SHA-256 (hex) of the content that load read; `None` if it was
    /// refused before reading it (not a regular file, or unreadable).
    pub sha256: Option<String>,
    /// When it ended, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What it ended in.
    pub end: LoadEnd,
    /// How long each step took, in order, up to where the load ended (see [`LoadStep`]).
    pub steps: Vec<(LoadStep, std::time::Duration)>,
}

/// A step of a load, timed in [`LoadReport::steps`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadStep {
    /// The private copy read, hashed and written, its signature's bytes
    /// checked beside.
    Copy,
    /// The manifest read from the copy, the signature's verdict, and the
    /// admission (versions, conflicts, the rolling wire check).
    Admit,
    /// dlopen of the copy and the root module's layout check.
    Map,
    /// The plugin's `create` (its runtime started, its state built).
    Create,
    /// The plugin's `start`.
    Start,
    /// A strategy handed to the cluster manager (nothing for other plugins).
    Attach,
    /// A running version replaced by this one (stop, swap, start, attach).
    Replace,
}

impl LoadStep {
    /// Its name in logs and reports.
    pub fn name(self) -> &'static str {
        match self {
            LoadStep::Copy => "copy",
            LoadStep::Admit => "admit",
            LoadStep::Map => "map",
            LoadStep::Create => "create",
            LoadStep::Start => "start",
            LoadStep::Attach => "attach",
            LoadStep::Replace => "replace",
        }
    }
}

/// Times the steps of one load.
pub(crate) struct Laps {
    started: std::time::Instant,
    last: std::time::Instant,
    pub(crate) steps: Vec<(LoadStep, std::time::Duration)>,
}

impl Laps {
    pub(crate) fn start() -> Self {
        let now = std::time::Instant::now();
        Laps { started: now, last: now, steps: Vec::new() }
    }

    /// Since the load began.
    pub(crate) fn total(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Ends `step` now.
    pub(crate) fn lap(&mut self, step: LoadStep) {
        let now = std::time::Instant::now();
        self.steps.push((step, now - self.last));
        self.last = now;
    }

    /// "copy 5.10 ms, map 1.20 ms, …".
    pub(crate) fn describe(&self) -> String {
        let steps: Vec<String> = self
            .steps
            .iter()
            .map(|(step, took)| format!("{} {:.2} ms", step.name(), took.as_secs_f64() * 1e3))
            .collect();
        steps.join(", ")
    }
}

/// The end of one load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadEnd {
    /// Put into service, replaced, or found already active.
    Done(LoadOutcome),
    /// Refused; `kept_running` when the version already running from this
    /// file stays in service.
    Refused { cause: RefusalCause, kept_running: bool },
}
