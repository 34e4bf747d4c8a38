//! A plugin file's life in the host, one module per step it passes through:
//!
//! [`watcher`] sees a complete, changed file in plugins/ →
//! [`manifest`] reads its manifest from the bytes (no code runs) →
//! [`signature`] checks who signed those bytes (`plugins.signature`) →
//! [`registry`] admits it against the active plugins and records its state →
//! [`loader`] maps a private copy and calls create / start, each call contained →
//! [`manager`] puts it into service (Active), hot-replaces, stops and retires it;
//! [`outcome`] is what each load ends in; [`digest`] names a file's content.

pub mod digest;
pub mod loader;
pub mod manager;
pub mod manifest;
pub mod outcome;
pub mod registry;
pub mod signature;
pub mod watcher;
