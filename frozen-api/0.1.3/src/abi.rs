//! The `abi_stable` types that cross the host/plugin boundary.
//!
//! Growth rule: every prefix type and trait here grows only by appending
//! after its `#[sabi(last_prefix_field)]`; the host checks a field added
//! later is present before it uses it (see docs/plugin-authoring.md).

// `#[sabi_trait]` expands to impls inside a const block (a lint since Rust 1.80).
#![allow(non_local_definitions)]

use abi_stable::library::RootModule;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RArc, RBox, ROption, RResult, RStr, RString};
use abi_stable::{declare_root_module_statics, package_version_strings, sabi_trait, StableAbi};
use async_ffi::FfiFuture;

use crate::cluster::{ClusterCallbacksBox, StrategyBox};

/// The root module every plugin library exports.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
#[sabi(missing_field(panic))]
pub struct PluginMod {
    /// The manifest text compiled into the library.
    pub manifest: extern "C" fn() -> RStr<'static>,
    /// Builds the plugin instance. Never unwinds: a panic comes back as
    /// an error of kind [`PluginErrorKind::Panicked`].
    #[sabi(last_prefix_field)]
    pub create: extern "C" fn(host: HostServicesBox) -> RResult<PluginBox, PluginError>,
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "clusterhost_plugin";
    const NAME: &'static str = "clusterhost_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// What kind of failure a plugin call reports.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginErrorKind {
    /// The plugin returned an error.
    Failed,
    /// The plugin panicked; the panic was caught on the plugin's side.
    Panicked,
}

/// How an [`PluginError::unsupported`] error's message starts.
pub const UNSUPPORTED_PREFIX: &str = "unsupported: ";

/// An error returned across the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    /// Returned or panicked.
    pub kind: PluginErrorKind,
    /// What the plugin said.
    pub message: RString,
}

impl PluginError {
    /// An ordinary failure.
    pub fn failed(message: impl Into<String>) -> Self {
        PluginError { kind: PluginErrorKind::Failed, message: RString::from(message.into()) }
    }

    /// A capability the strategy does not offer (see
    /// [`Unsupported`](crate::Unsupported)). It crosses as a `Failed` error
    /// whose message starts with [`UNSUPPORTED_PREFIX`]: a new variant of
    /// [`PluginErrorKind`] would change the type's layout, and the host
    /// would refuse every plugin built before it.
    pub fn unsupported(message: impl Into<String>) -> Self {
        PluginError::failed(format!("{UNSUPPORTED_PREFIX}{}", message.into()))
    }

    /// Whether this reports a capability the strategy does not offer.
    pub fn is_unsupported(&self) -> bool {
        self.kind == PluginErrorKind::Failed && self.message.as_str().starts_with(UNSUPPORTED_PREFIX)
    }

    /// The message without the unsupported marker.
    pub fn detail(&self) -> &str {
        self.message.as_str().strip_prefix(UNSUPPORTED_PREFIX).unwrap_or(self.message.as_str())
    }

    /// A caught panic.
    pub fn panicked(message: impl Into<String>) -> Self {
        PluginError { kind: PluginErrorKind::Panicked, message: RString::from(message.into()) }
    }
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            PluginErrorKind::Failed => write!(f, "{}", self.message),
            PluginErrorKind::Panicked => write!(f, "panicked: {}", self.message),
        }
    }
}

impl std::error::Error for PluginError {}

/// Severity of a forwarded log record.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// A running plugin instance, as the host sees it.
#[sabi_trait]
pub trait PluginInstance: Send + Sync {
    /// Starts the plugin's work. Bounded by the host's execution budget.
    fn start(&self) -> FfiFuture<RResult<(), PluginError>>;

    /// Stops the plugin's work; the instance is dropped afterwards.
    fn stop(&self) -> FfiFuture<RResult<(), PluginError>>;

    /// The plugin's cluster strategy, for a plugin that provides
    /// `cluster-strategy` (asked once, after a successful start); `None`
    /// for other plugins.
    #[sabi(last_prefix_field)]
    fn cluster_strategy(&self, callbacks: ClusterCallbacksBox) -> RResult<ROption<StrategyBox>, PluginError>;
}

/// The owned form of a plugin instance.
pub type PluginBox = PluginInstance_TO<'static, RBox<()>>;

/// What the host offers a plugin. Calls never block the calling plugin thread.
#[sabi_trait]
pub trait HostServices: Send + Sync + Clone {
    /// The id of the plugin these services were made for.
    fn plugin_id(&self) -> RString;
    /// The host's version.
    fn host_version(&self) -> RString;
    /// The node's home directory.
    fn home_dir(&self) -> RString;
    /// Where plugin configuration files live (`cluster.config.directory`).
    fn config_dir(&self) -> RString;
    /// Emits a log record into the host's log, tagged with the plugin id.
    fn log(&self, level: LogLevel, target: RStr<'_>, message: RStr<'_>);
    /// A node property (`node.name`, `node.bind`, `cluster.port`, ...): the
    /// node's CLI flags and environment first, then clusterhost.properties.
    #[sabi(last_prefix_field)]
    fn property(&self, key: RStr<'_>) -> ROption<RString>;
}

/// The shared form of the host's services.
pub type HostServicesBox = HostServices_TO<'static, RArc<()>>;
