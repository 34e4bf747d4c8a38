//! The shared directory: `members/<id>`, `caches/<hex name>/<hex key>`
//! (version, then value) and `settings/<hex key>`. Every write goes to a
//! temporary file (named `.…`, which readers skip) renamed into place, so
//! nobody ever reads half a file, even after a crash or a dropped call.

use std::collections::BTreeMap;
use std::io::ErrorKind::NotFound;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clusterhost_plugin_api::cluster::{Entry, Member};

/// What went wrong with the shared directory.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not {action} {}: {source}; check that the shared directory is mounted and this node may write to it", path.display())]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("the node name {0:?} cannot name a file in members/; set node.name (letters, digits, '-', '_')")]
    BadName(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// The shared directory.
pub struct Dir {
    root: PathBuf,
}

impl Dir {
    /// Opens `root` (making its folders) for member `id`.
    pub fn open(root: &Path, id: &str) -> Result<Dir> {
        if id.is_empty() || id.starts_with('.') || id.contains('/') {
            return Err(Error::BadName(id.to_string()));
        }
        for folder in ["members", "caches", "settings"] {
            let path = root.join(folder);
            std::fs::create_dir_all(&path).map_err(io("create", &path))?;
        }
        Ok(Dir { root: root.to_owned() })
    }

    /// Writes `bytes` as `path`, whole or not at all: a temporary file
    /// (`.tmpXXXXXX`, removed if anything fails), renamed into place.
    fn write(&self, path: PathBuf, bytes: &[u8]) -> Result<()> {
        let dir = path.parent().expect("every path here is inside the root");
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io("create a file in", dir))?;
        tmp.write_all(bytes).map_err(io("write a file in", dir))?;
        tmp.persist(&path).map_err(|e| io("rename a file to", &path)(e.error)).map(drop)
    }

    /// Writes (and so refreshes) member `m`'s file: one line per field.
    pub fn put_member(&self, m: &Member) -> Result<()> {
        let text = format!("{}\n{}\n{}\n", m.started_at_ms, m.plugin_version, m.address);
        self.write(self.root.join("members").join(&m.id), text.as_bytes())
    }

    /// Removes member `id`'s file.
    pub fn remove_member(&self, id: &str) -> Result<()> {
        remove(self.root.join("members").join(id)).map(drop)
    }

    /// The members whose file is younger than `expiry`; older files are
    /// removed by whoever sees them first. Clocks must agree within the
    /// expiry, as with any lease.
    pub fn members(&self, expiry: Duration) -> Result<Vec<Member>> {
        let mut members = Vec::new();
        for (id, path) in listed(&self.root.join("members"))? {
            let Ok(modified) = std::fs::metadata(&path).and_then(|m| m.modified()) else { continue };
            if SystemTime::now().duration_since(modified).unwrap_or_default() > expiry {
                let _ = remove(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let mut lines = text.lines().map(str::to_string);
            if let (Some(Ok(started_at_ms)), Some(plugin_version), Some(address)) =
                (lines.next().map(|l| l.parse()), lines.next(), lines.next())
            {
                members.push(Member { id, address, started_at_ms, plugin_version });
            }
        }
        Ok(members)
    }

    fn cache(&self, cache: &str) -> PathBuf {
        self.root.join("caches").join(hex(cache.as_bytes()))
    }

    /// Entry `key` of `cache`: (version, value).
    pub fn get(&self, cache: &str, key: &[u8]) -> Result<Option<(u64, Vec<u8>)>> {
        read_entry(&self.cache(cache).join(hex(key)))
    }

    /// Writes entry `key` of `cache` with `version`.
    pub fn put(&self, cache: &str, key: &[u8], version: u64, value: &[u8]) -> Result<()> {
        self.write(self.cache(cache).join(hex(key)), &[&version.to_be_bytes()[..], value].concat())
    }

    /// Removes entry `key`; whether it was there.
    pub fn remove(&self, cache: &str, key: &[u8]) -> Result<bool> {
        remove(self.cache(cache).join(hex(key)))
    }

    /// Removes every entry of `cache`.
    pub fn clear(&self, cache: &str) -> Result<()> {
        listed(&self.cache(cache))?.into_iter().try_for_each(|(_, path)| remove(path).map(drop))
    }

    /// The keys of `cache`.
    pub fn keys(&self, cache: &str) -> Result<Vec<Vec<u8>>> {
        Ok(listed(&self.cache(cache))?.into_iter().filter_map(|(name, _)| unhex(&name)).collect())
    }

    /// Every entry of `cache`.
    pub fn entries(&self, cache: &str) -> Result<Vec<Entry>> {
        let mut entries = Vec::new();
        for (name, path) in listed(&self.cache(cache))? {
            if let (Some(key), Some((version, value))) = (unhex(&name), read_entry(&path)?) {
                entries.push(Entry { key, value, version });
            }
        }
        Ok(entries)
    }

    /// The names of the caches written so far.
    pub fn cache_names(&self) -> Result<Vec<String>> {
        let names = listed(&self.root.join("caches"))?.into_iter().filter_map(|(name, _)| unhex(&name));
        Ok(names.filter_map(|name| String::from_utf8(name).ok()).collect())
    }

    /// Every setting, by key.
    pub fn settings(&self) -> Result<BTreeMap<String, String>> {
        let mut settings = BTreeMap::new();
        for (name, path) in listed(&self.root.join("settings"))? {
            let key = unhex(&name).and_then(|k| String::from_utf8(k).ok());
            if let (Some(key), Ok(value)) = (key, std::fs::read_to_string(&path)) {
                settings.insert(key, value);
            }
        }
        Ok(settings)
    }

    /// Writes setting `key`.
    pub fn put_setting(&self, key: &str, value: &str) -> Result<()> {
        self.write(self.root.join("settings").join(hex(key.as_bytes())), value.as_bytes())
    }
}

/// Names the path and what was done to it in an I/O error.
fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io { action, path: path.to_owned(), source }
}

/// Removes a file; whether it was there.
fn remove(path: PathBuf) -> Result<bool> {
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == NotFound => Ok(false),
        Err(e) => Err(io("remove", &path)(e)),
    }
}

/// The names and paths in `dir` but temporary files; none if it is missing.
fn listed(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("list", dir)(e)),
    };
    let names = entries.flatten().filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())));
    Ok(names.filter(|(name, _)| !name.starts_with('.')).collect())
}

/// An entry file: its version (8 bytes, big-endian), then the value.
fn read_entry(path: &Path) -> Result<Option<(u64, Vec<u8>)>> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() >= 8 => {
            let (version, value) = bytes.split_at(8);
            Ok(Some((u64::from_be_bytes(version.try_into().expect("split at 8")), value.to_vec())))
        }
        Ok(_) => Ok(None),
        Err(e) if e.kind() == NotFound => Ok(None),
        Err(e) => Err(io("read", path)(e)),
    }
}

/// A file name for any bytes (a cache name, a key); `-` for none.
fn hex(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "-".into();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text == "-" {
        return Some(Vec::new());
    }
    text.as_bytes().chunks(2).map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()).collect()
}
