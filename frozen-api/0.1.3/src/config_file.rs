//! A plugin's own configuration file (TOML, e.g. `conf/gossip.toml`):
//! read once at load, with errors that name the file and line, and what to
//! do about them.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Why a plugin's configuration file was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("could not read {file}: {detail}; create it (conf/{name} in the repository lists every key; docs/plugins.md says where a plugin's file is)")]
    Unreadable { file: PathBuf, name: String, detail: String },
    #[error("{file}:{line}: {message}; fix the file and publish the {plugin} plugin again")]
    Invalid { plugin: String, file: PathBuf, line: usize, message: String },
}

/// One configuration file of plugin `plugin` (its id, for messages).
#[derive(Debug, Clone)]
pub struct ConfigFile<'a> {
    pub plugin: &'a str,
    pub file: &'a Path,
    /// The file's text (empty for a missing file).
    pub text: &'a str,
}

impl<'a> ConfigFile<'a> {
    /// Reads `file`: its text, or `None` when it does not exist (the
    /// plugin's defaults apply).
    pub fn read(file: &Path) -> Result<Option<String>, ConfigError> {
        match std::fs::read_to_string(file) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ConfigError::Unreadable {
                file: file.to_owned(),
                name: file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                detail: e.to_string(),
            }),
        }
    }

    /// Deserializes the text; a TOML or type error names its line.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::from_str(self.text).map_err(|e| {
            let line = e.span().map(|s| self.text[..s.start.min(self.text.len())].matches('\n').count() + 1);
            // The first line of toml's message is the useful part.
            let message = e.message().lines().next().unwrap_or("invalid TOML").to_string();
            self.error(line.unwrap_or(1), message)
        })
    }

    /// The error for a value that parses but is wrong: on the first line
    /// that starts with `key` (line 1 when none does).
    pub fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        let line = self.text.lines().position(|l| l.trim_start().starts_with(key)).map_or(1, |i| i + 1);
        self.error(line, message.into())
    }

    fn error(&self, line: usize, message: String) -> ConfigError {
        ConfigError::Invalid { plugin: self.plugin.to_string(), file: self.file.to_owned(), line, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        port: u16,
    }

    #[test]
    fn errors_name_file_line_and_plugin() {
        let file = Path::new("conf/x.toml");
        let config = ConfigFile { plugin: "x", file, text: "\nport = \"many\"\n" };
        let err = config.parse::<Sample>().unwrap_err().to_string();
        assert!(err.starts_with("conf/x.toml:2: invalid type"), "{err}");
        assert!(err.ends_with("fix the file and publish the x plugin again"), "{err}");
        let err = config.invalid("port", "port must be above 0").to_string();
        assert!(err.starts_with("conf/x.toml:2: port must be above 0;"), "{err}");
        assert_eq!(ConfigFile::read(Path::new("/nonexistent/x.toml")), Ok(None));
        let err = ConfigFile::read(Path::new("/tmp")).unwrap_err().to_string();
        assert!(err.starts_with("could not read /tmp: ") && err.contains("conf/tmp in the repository"), "{err}");
    }
}
