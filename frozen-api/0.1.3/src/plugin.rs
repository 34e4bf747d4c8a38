//! What a plugin author implements, and the adapter that carries it across
//! the boundary: panics caught, futures run on the plugin's own runtime.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RErr, ROk, ROption, RResult};
use async_ffi::{FfiFuture, FutureExt};

use crate::abi::{HostServicesBox, PluginBox, PluginError, PluginInstance, PluginInstance_TO};
use crate::cluster::{ClusterCallbacksBox, StrategyBox};
use crate::strategy::ClusterHost;

/// The result type of plugin code; any error type converts into it with `?`.
pub type PluginResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A plugin's implementation. Both methods have no-op defaults.
///
/// The futures run on a tokio runtime the plugin owns (tokio's statics are
/// not shared between the host and a library), so plugin code may use
/// `tokio::spawn`, timers and sockets freely.
pub trait Plugin: Send + Sync + 'static {
    /// Starts the plugin's work.
    fn start(&self) -> impl Future<Output = PluginResult<()>> + Send {
        async { Ok(()) }
    }

    /// Stops the plugin's work; the plugin is dropped afterwards.
    fn stop(&self) -> impl Future<Output = PluginResult<()>> + Send {
        async { Ok(()) }
    }

    /// For a plugin that provides `cluster-strategy`: its strategy, made
    /// with [`ClusterHost::into_boundary`]. Asked once, after `start`.
    fn cluster_strategy(&self, cluster: &ClusterHost) -> PluginResult<Option<StrategyBox>> {
        let _ = cluster;
        Ok(None)
    }
}

/// The host, as a plugin sees it.
#[derive(Clone)]
pub struct Host {
    services: HostServicesBox,
    /// This plugin's manifest, as it is in the loaded file (a release tool
    /// may have restamped it): what the plugin is and announces.
    manifest: Arc<crate::Manifest>,
}

impl Host {
    /// This plugin's id, as the host loaded it.
    pub fn plugin_id(&self) -> String {
        self.services.plugin_id().into()
    }

    /// The host's version.
    pub fn host_version(&self) -> String {
        self.services.host_version().into()
    }

    /// The node's home directory.
    pub fn home_dir(&self) -> String {
        self.services.home_dir().into()
    }

    /// Where configuration files live (`cluster.config.directory`).
    pub fn config_dir(&self) -> String {
        self.services.config_dir().into()
    }

    /// A node property (`node.name`, `node.bind`, `cluster.port`, ...).
    pub fn property(&self, key: &str) -> Option<String> {
        self.services.property(key.into()).into_option().map(Into::into)
    }

    /// This node's name (`node.name`), the member id strategies use.
    pub fn node_name(&self) -> String {
        self.property("node.name").unwrap_or_else(|| "node".to_string())
    }

    /// This plugin's own manifest (id, version, wire protocol), as the
    /// host read it from the loaded file.
    pub fn manifest(&self) -> &crate::Manifest {
        &self.manifest
    }

    /// This plugin's configuration file: `<config dir>/<plugin id>.toml`.
    /// For compatibility, `cluster.config.file` still names it, but only
    /// for the plugin whose id the file name starts with (e.g.
    /// `gossip-test.toml` for `gossip`; a warning says when it is not):
    /// one key no longer sends every strategy to the same file.
    pub fn config_file(&self) -> std::path::PathBuf {
        let dir = std::path::PathBuf::from(self.config_dir());
        let id = self.manifest.id.as_str();
        let own = format!("{id}.toml");
        match self.property("cluster.config.file") {
            Some(name) if names_plugin(&name, id) => dir.join(name),
            Some(name) => {
                tracing::warn!(
                    "cluster.config.file = {name} is not read by plugin {id}: its name does not start with {id:?}, so it may be another strategy's file; {id} reads {} instead. Rename the file to {own} (or to {id}-SOMETHING.toml and set cluster.config.file to that)",
                    dir.join(&own).display()
                );
                dir.join(own)
            }
            None => dir.join(own),
        }
    }
}

/// Whether file name `name` is plugin `id`'s: `ID.toml`, or `ID` followed
/// by `-`, `_` or `.` (`gossip-test.toml`, not `gossipy.toml`).
fn names_plugin(name: &str, id: &str) -> bool {
    name.strip_prefix(id).is_some_and(|rest| rest.starts_with(['-', '_', '.']))
}

/// Carries a [`Plugin`] across the boundary.
struct Adapter<P> {
    /// `None` only while being dropped.
    plugin: Option<Arc<P>>,
    runtime: Option<tokio::runtime::Runtime>,
    /// Set just before the runtime shuts down; the strategy's adapter
    /// checks it so no call is polled on a runtime that is going away.
    stopped: crate::strategy::StopGate,
}

impl<P: Plugin> Adapter<P> {
    fn run<F, Fut>(&self, call: F) -> FfiFuture<RResult<(), PluginError>>
    where
        F: FnOnce(Arc<P>) -> Fut + Send + 'static,
        Fut: Future<Output = PluginResult<()>> + Send + 'static,
    {
        let runtime = self.runtime.as_ref().expect("the runtime lives until the adapter is dropped");
        let plugin = self.plugin.clone().expect("the plugin lives until the adapter is dropped");
        // The plugin's code (even the part that builds the future) runs on
        // the plugin's runtime, where tokio catches a panic as a JoinError.
        let handle = runtime.spawn(async move { call(plugin).await });
        async move {
            match handle.await {
                Ok(Ok(())) => ROk(()),
                Ok(Err(error)) => RErr(PluginError::failed(error.to_string())),
                Err(join) if join.is_panic() => RErr(PluginError::panicked(panic_message(join.into_panic()))),
                Err(_) => RErr(PluginError::failed("the plugin's task was cancelled")),
            }
        }
        .into_ffi()
    }
}

impl<P: Plugin> PluginInstance for Adapter<P> {
    fn cluster_strategy(&self, callbacks: ClusterCallbacksBox) -> RResult<ROption<StrategyBox>, PluginError> {
        let runtime = self.runtime.as_ref().expect("the runtime lives until the adapter is dropped");
        let plugin = self.plugin.as_ref().expect("the plugin lives until the adapter is dropped");
        let cluster = ClusterHost::with_stop_flag(callbacks, runtime.handle().clone(), self.stopped.clone());
        let _entered = runtime.enter();
        match catch_unwind(AssertUnwindSafe(|| plugin.cluster_strategy(&cluster))) {
            Ok(Ok(strategy)) => ROk(strategy.into()),
            Ok(Err(error)) => RErr(PluginError::failed(error.to_string())),
            Err(payload) => RErr(PluginError::panicked(panic_message(payload))),
        }
    }

    fn start(&self) -> FfiFuture<RResult<(), PluginError>> {
        self.run(|plugin| async move { plugin.start().await })
    }

    fn stop(&self) -> FfiFuture<RResult<(), PluginError>> {
        self.run(|plugin| async move { plugin.stop().await })
    }
}

impl<P> Drop for Adapter<P> {
    fn drop(&mut self) {
        // The plugin's own Drop is plugin code: a panic there must not unwind
        // into the host (it would abort the process).
        // Waits for strategy calls in progress on host threads; none starts after.
        self.stopped.close();
        let plugin = self.plugin.take();
        let _ = catch_unwind(AssertUnwindSafe(move || drop(plugin)));
        // The host may drop us from any thread, including one of its async
        // workers; waiting for our workers there could stall it.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

pub(crate) fn panic_message(payload: Box<dyn Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}

/// Builds a plugin instance for the root module's `create`; never unwinds.
#[doc(hidden)]
pub fn create_instance<P: Plugin>(
    services: HostServicesBox,
    manifest: &str,
    create: fn(&Host) -> PluginResult<P>,
) -> RResult<PluginBox, PluginError> {
    let outcome = catch_unwind(AssertUnwindSafe(|| -> Result<PluginBox, PluginError> {
        crate::log::forward_to_host(&services);
        let id = services.plugin_id();
        // The host checked this very text before it loaded the library.
        let manifest = crate::Manifest::parse(manifest)
            .map_err(|e| PluginError::failed(format!("the plugin's own manifest does not parse: {e}")))?;
        let host = Host { services, manifest: Arc::new(manifest) };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(format!("plugin-{id}"))
            .enable_all()
            .build()
            .map_err(|e| PluginError::failed(format!("could not start the plugin's runtime: {e}")))?;
        let plugin = {
            let _entered = runtime.enter();
            create(&host).map_err(|e| PluginError::failed(e.to_string()))?
        };
        let adapter = Adapter { plugin: Some(Arc::new(plugin)), runtime: Some(runtime), stopped: Default::default() };
        Ok(PluginInstance_TO::from_value(adapter, TD_Opaque))
    }));
    match outcome {
        Ok(Ok(instance)) => ROk(instance),
        Ok(Err(error)) => RErr(error),
        Err(payload) => RErr(PluginError::panicked(panic_message(payload))),
    }
}

/// Declares a plugin: embeds its manifest and exports its root module.
///
/// The plugin crate must be a `cdylib` and depend on `abi_stable` (its
/// export attribute names `::abi_stable`). `create` is a
/// `fn(&Host) -> PluginResult<P>` where `P: Plugin`. Fields come in the order
/// shown; `version` and `api_req` are optional (see `embed_manifest!`).
#[macro_export]
macro_rules! declare_plugin {
    (
        id: $id:literal,
        $(version: $version:literal,)?
        description: $description:literal,
        host_req: $host_req:literal,
        $(api_req: $api_req:literal,)?
        provides: [$($provides:literal),* $(,)?],
        conflicts: [$($conflicts:literal),* $(,)?],
        wire_protocol: $wire:literal,
        create: $create:expr $(,)?
    ) => {
        $crate::embed_manifest! {
            id: $id,
            $(version: $version,)?
            description: $description,
            host_req: $host_req,
            $(api_req: $api_req,)?
            provides: [$($provides),*],
            conflicts: [$($conflicts),*],
            wire_protocol: $wire,
        }

        extern "C" fn __clusterhost_manifest() -> $crate::__private::abi_stable::std_types::RStr<'static> {
            $crate::__private::abi_stable::std_types::RStr::from_str(clusterhost_manifest_text())
        }

        extern "C" fn __clusterhost_create(
            host: $crate::abi::HostServicesBox,
        ) -> $crate::__private::abi_stable::std_types::RResult<$crate::abi::PluginBox, $crate::PluginError> {
            $crate::__private::create_instance(host, clusterhost_manifest_text(), $create)
        }

        /// The root module the host loads.
        #[$crate::__private::abi_stable::export_root_module]
        pub fn clusterhost_root_module() -> $crate::abi::PluginModRef {
            use $crate::__private::abi_stable::prefix_type::PrefixTypeTrait;
            $crate::abi::PluginMod {
                manifest: __clusterhost_manifest,
                create: __clusterhost_create,
            }
            .leak_into_prefix()
        }
    };
}
