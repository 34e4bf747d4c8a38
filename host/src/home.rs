//! A node's home directory and what lives where in it: conf/ (the
//! properties and the admin token), plugins/ (the published plugin files),
//! run/ (the status file). Every path into a home is built here.

use std::path::{Path, PathBuf};

/// The configuration directory, relative to the home (also
/// `cluster.config.directory`'s default).
pub const CONF_DIR: &str = "conf";

/// The published plugin files, relative to the home.
pub const PLUGINS_DIR: &str = "plugins";

/// What a running node writes about itself, relative to the home.
pub const RUN_DIR: &str = "run";

/// The properties file's name, in [`CONF_DIR`].
pub const PROPERTIES_FILE_NAME: &str = "clusterhost.properties";

/// The status file's name, in [`RUN_DIR`].
pub const STATUS_FILE_NAME: &str = "node.json";

/// The admin token file, relative to the home: `admin.token.file`'s
/// default, and the file the CLI reads when run in a node's home without
/// `--token-file`.
pub const TOKEN_FILE: &str = "conf/admin.token";

/// `HOME/conf`.
pub fn conf_dir(home: &Path) -> PathBuf {
    home.join(CONF_DIR)
}

/// The trusted plugin signing keys' directory name, in [`CONF_DIR`].
pub const TRUSTED_KEYS_DIR_NAME: &str = "trusted-keys";

/// `HOME/conf/trusted-keys`: the minisign public keys (`*.pub`) a node
/// trusts to sign plugins.
pub fn trusted_keys_dir(home: &Path) -> PathBuf {
    conf_dir(home).join(TRUSTED_KEYS_DIR_NAME)
}

/// `HOME/plugins`.
pub fn plugins_dir(home: &Path) -> PathBuf {
    home.join(PLUGINS_DIR)
}

/// `HOME/run`.
pub fn run_dir(home: &Path) -> PathBuf {
    home.join(RUN_DIR)
}

/// `HOME/run/admin.json`: where a running node's admin API listens and
/// which token file it reads (for the CLI run in its home).
pub fn admin_file(home: &Path) -> PathBuf {
    run_dir(home).join("admin.json")
}

/// `HOME/conf/clusterhost.properties`.
pub fn properties_file(home: &Path) -> PathBuf {
    conf_dir(home).join(PROPERTIES_FILE_NAME)
}

/// Whether `path` names a properties file (what the properties watcher acts on).
pub fn is_properties_file(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == PROPERTIES_FILE_NAME)
}

/// `HOME/run/node.json`.
pub fn status_file(home: &Path) -> PathBuf {
    run_dir(home).join(STATUS_FILE_NAME)
}

/// The admin token file `admin.token.file` names (`configured`): relative
/// to the home, or absolute.
pub fn token_file(home: &Path, configured: &Path) -> PathBuf {
    home.join(configured)
}
