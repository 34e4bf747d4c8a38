//! A hot upgrade: the active version stops, the new one starts, and if the
//! new one fails to start the old one is started again from its own
//! (still mapped) library.

use semver::Version;

use super::{page_out_later, Active, PluginManager};
use crate::plugins::loader::{self, LifecycleCall, LifecycleError};
use crate::plugins::outcome::{LoadError, LoadOutcome};
use crate::plugins::registry::PluginState;

impl PluginManager {
    /// Swaps the active plugin with `manifest.id` for the new instance: the
    /// old one stops, the new one starts; if the new one fails to start, the
    /// old version is started again from its own (still mapped) library.
    pub(super) async fn replace(
        &self,
        active: &mut Vec<Active>,
        new: Active,
        from: Version,
    ) -> Result<LoadOutcome, LoadError> {
        let Active { manifest, file, instance, module, copy } = new;
        let file = file.as_path();
        let budget = self.budget();
        let id = manifest.id.clone();
        let index = active.iter().position(|a| a.manifest.id == id).expect("Replace is only decided for an active id");
        let old = active.remove(index);
        self.detach_strategy(&old.manifest).await;
        if old.file == file {
            // The file's record already names the new version; the one
            // stopping is the old, so say that rather than the record's label.
            let to = &manifest.version;
            self.registry().set(
                file,
                PluginState::Stopping,
                Some(format!("{id} {from} stops for the upgrade to {to}")),
            );
            self.shared.changes.send_modify(|n| *n += 1);
            tracing::info!(plugin = %id, file = %file.display(), state = %PluginState::Stopping, "{id} {from} stopping (replaced by {to})");
        } else {
            self.set_state(&old.file, PluginState::Stopping, None);
        }
        if let Err(e) = loader::call(&id, &old.instance, LifecycleCall::Stop, budget).await {
            tracing::warn!(plugin = %id, "stopping {id} {from} for the upgrade failed: {e}; going on with the upgrade");
        }
        drop(old.instance);
        let started = match loader::call(&id, &instance, LifecycleCall::Start, budget).await {
            Ok(()) => self.attach_strategy(&manifest, &instance).await,
            Err(e) => Err(e),
        };
        match started {
            Ok(()) => {
                let to = manifest.version.clone();
                if old.file != file {
                    self.set_state(
                        &old.file,
                        PluginState::Retired,
                        Some(format!("replaced by {id} {to} from {}", file.display())),
                    );
                }
                active.insert(index, Active { manifest, file: file.to_owned(), instance, module, copy });
                page_out_later(&id, old.copy);
                self.set_state(file, PluginState::Active, Some(format!("upgraded from {from}")));
                Ok(LoadOutcome::Replaced { id, from, to })
            }
            Err(start_error) => {
                drop(instance);
                let restored = async {
                    let instance = loader::create(&id, old.module, self.services(&id), budget).await?;
                    loader::call(&id, &instance, LifecycleCall::Start, budget).await?;
                    self.attach_strategy(&old.manifest, &instance).await?;
                    Ok::<_, LifecycleError>(instance)
                }
                .await;
                match restored {
                    Ok(instance) => {
                        self.set_state(file, PluginState::Faulted, Some(start_error.to_string()));
                        // When the old and new file are the same, `load` rewrites
                        // this file's record from the plugin still running.
                        if old.file != file {
                            let reason =
                                format!("kept after the upgrade to {} failed: {start_error}", manifest.version);
                            self.set_state(&old.file, PluginState::Active, Some(reason));
                        }
                        active.insert(index, Active { instance, ..old });
                    }
                    Err(e) => {
                        tracing::error!(plugin = %id, "could not restart {id} {from} after the failed upgrade: {e}");
                        self.set_strategy_lost(
                            &old.manifest,
                            Some(format!(
                                "cluster strategy {id} is out of service: the upgrade to {} failed and {from} could not be restarted",
                                manifest.version
                            )),
                        );
                        self.set_state(
                            &old.file,
                            PluginState::Faulted,
                            Some(format!("restart after a failed upgrade failed: {e}")),
                        );
                    }
                }
                Err(start_error.into())
            }
        }
    }
}
