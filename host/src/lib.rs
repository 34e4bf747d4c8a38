//! clusterhost: a node that runs alone and becomes a cluster member when a
//! cluster-strategy plugin is dropped into its plugins/ directory.
//!
//! The binary is a thin layer over this library ([`cli`] does each command's
//! work): [`node::run`] runs a node,
//! [`plugins::manager::PluginManager`] takes plugins in and out of service,
//! [`plugins::manifest::read_manifest`] inspects a plugin without loading it.

pub mod admin;
pub mod atomic_file;
pub mod cli;
pub mod cluster;
pub mod conformance;
pub mod event_log;
pub mod home;
pub mod logging;
pub mod node;
pub mod plugins;
pub mod process;
pub mod properties;
pub mod status;
pub mod text;
pub mod upgrade;

pub use node::{Node, NodeError, NodeOptions};
pub use plugins::manager::{LoadError, LoadOutcome, ManagerConfig, PluginManager};
pub use plugins::registry::{PluginRecord, PluginState};

/// docs/embedding.md, compiled and run as a doc test so the guide stays true.
#[cfg(doctest)]
#[doc = include_str!("../../docs/embedding.md")]
pub struct EmbeddingGuide;
