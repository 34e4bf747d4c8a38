//! The stable boundary between the clusterhost host and its plugins.
//!
//! A plugin crate (a `cdylib`) implements [`Plugin`] and writes ONE
//! [`declare_plugin!`] declaration. That declaration embeds the plugin's
//! [`Manifest`] in an ELF section the host reads without running any plugin
//! code, and exports an `abi_stable` root module the host loads afterwards.
//!
//! The complete example is `plugins/hello/src/lib.rs`, built and loaded by
//! the test suite; docs/plugin-authoring.md walks through it.

pub mod abi;
pub mod accept;
pub mod cluster;
pub mod config_file;
pub mod local;
mod log;
pub mod manifest;
pub mod membership;
#[cfg(feature = "memory")]
pub mod memory;
mod plugin;
pub mod shell;
mod strategy;
pub mod sync;
pub mod throttle;

pub use abi::{PluginError, PluginErrorKind};
pub use manifest::{Manifest, ManifestError, WireVersion, CLUSTER_STRATEGY};
pub use plugin::{Host, Plugin, PluginResult};
pub use strategy::{ClusterHost, Strategy, Unsupported};

/// The version of this API crate, which plugins record as their default `api_req`.
pub const API_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Items the macros expand to; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::plugin::create_instance;
    pub use abi_stable;
    pub use async_ffi;
    pub use const_format;
}
