//! `conf/shared-dir.toml`: the shared directory and how often members
//! refresh their files and read the others'. A bad file is refused with
//! file:line when the plugin loads.

use std::path::{Path, PathBuf};

use clusterhost_plugin_api::config_file::{ConfigError, ConfigFile};
use serde::Deserialize;

/// The strategy's settings (conf/shared-dir.toml in the repository lists them).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The directory every member reaches; relative: to the config folder.
    pub dir: PathBuf,
    /// How often a member rewrites its own file and reads the directory.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_ms: u64,
    /// A member whose file is older than this is gone.
    #[serde(default = "default_expiry")]
    pub expiry_ms: u64,
}

fn default_heartbeat() -> u64 {
    200
}

fn default_expiry() -> u64 {
    1500
}

impl Config {
    /// Reads `file`, which must exist: `dir` has no default.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let Some(text) = ConfigFile::read(file)? else {
            return Err(ConfigError::Unreadable {
                file: file.to_owned(),
                name: "shared-dir.toml".into(),
                detail: "it does not exist, and dir (the shared directory) has no default".into(),
            });
        };
        let source = ConfigFile { plugin: "shared-dir", file, text: &text };
        let mut config: Config = source.parse()?;
        if config.heartbeat_ms == 0 || config.expiry_ms < 2 * config.heartbeat_ms {
            let message = "heartbeat_ms must be above 0, and expiry_ms at least twice heartbeat_ms";
            return Err(source.invalid("expiry_ms", message));
        }
        config.dir = file.parent().unwrap_or(Path::new(".")).join(&config.dir);
        Ok(config)
    }
}
