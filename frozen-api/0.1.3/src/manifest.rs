//! The plugin manifest: who a plugin is, what it needs and what it provides.
//!
//! It is embedded as TOML text in the ELF section [`MANIFEST_SECTION`] so the
//! host can check it before the library is ever mapped (see `embed_manifest!`).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};

/// The ELF section that holds a plugin's manifest.
pub const MANIFEST_SECTION: &str = ".clusterhost.manifest";
/// The manifest format this crate reads and writes.
pub const MANIFEST_FORMAT: u32 = 1;
/// The capability every cluster strategy provides; at most one active plugin may provide it.
pub const CLUSTER_STRATEGY: &str = "cluster-strategy";
/// Spaces appended after the embedded manifest, so release tooling (and the
/// test harness) can restamp a manifest (a version, say) without relinking.
pub const MANIFEST_PADDING: usize = 512;

/// What a plugin declares about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Format of this manifest; [`MANIFEST_FORMAT`] today.
    pub manifest_format: u32,
    /// Stable identifier: lowercase letters, digits, `-` and `_`.
    pub id: String,
    /// The plugin's own version.
    pub version: Version,
    /// One line saying what the plugin is for.
    pub description: String,
    /// Host versions this plugin works with.
    pub host_req: VersionReq,
    /// Plugin API versions this plugin works with.
    pub api_req: VersionReq,
    /// Capabilities this plugin provides (e.g. [`CLUSTER_STRATEGY`]).
    #[serde(default)]
    pub provides: Vec<String>,
    /// Plugin ids or capabilities that must not be active beside this plugin.
    #[serde(default)]
    pub conflicts: Vec<String>,
    /// Version of the protocol the plugin speaks to its peers on other members.
    pub wire_protocol: WireVersion,
    /// Free-form strings for the plugin itself; the host ignores them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    /// The text is not UTF-8.
    #[error("the manifest is not UTF-8 text")]
    NotUtf8,
    /// The TOML does not parse or a field has the wrong type.
    #[error("the manifest is malformed: {0}")]
    Malformed(String),
    /// A newer manifest format than this host understands.
    #[error("manifest format {found} is not supported (this host reads format {MANIFEST_FORMAT}); upgrade the host")]
    UnsupportedFormat { found: u32 },
    /// The id has characters outside `[a-z0-9_-]` or is empty.
    #[error("plugin id {0:?} is invalid: use 1-64 characters among a-z, 0-9, '-' and '_'")]
    InvalidId(String),
    /// An empty entry in `provides` or `conflicts`.
    #[error("the manifest's {0} list has an empty entry")]
    EmptyEntry(&'static str),
}

impl Manifest {
    /// Parses and validates manifest text (trailing padding is ignored).
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let text = text.trim_end_matches(['\0', ' ', '\n']);
        let manifest: Manifest =
            toml::from_str(text).map_err(|e| ManifestError::Malformed(e.to_string().trim_end().to_string()))?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Parses manifest bytes as found in the ELF section.
    pub fn parse_bytes(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let text = std::str::from_utf8(bytes).map_err(|_| ManifestError::NotUtf8)?;
        Self::parse(text)
    }

    fn validate(&self) -> Result<(), ManifestError> {
        if self.manifest_format != MANIFEST_FORMAT {
            return Err(ManifestError::UnsupportedFormat { found: self.manifest_format });
        }
        if !is_valid_id(&self.id) {
            return Err(ManifestError::InvalidId(self.id.clone()));
        }
        if self.provides.iter().any(|p| p.trim().is_empty()) {
            return Err(ManifestError::EmptyEntry("provides"));
        }
        if self.conflicts.iter().any(|p| p.trim().is_empty()) {
            return Err(ManifestError::EmptyEntry("conflicts"));
        }
        Ok(())
    }

    /// The manifest as TOML text, in the form `parse` reads.
    pub fn to_toml(&self) -> String {
        toml::to_string(self)
            .expect("a Manifest always serializes: every field is a string, number, list or string map")
    }

    /// Whether this plugin provides `capability`.
    pub fn provides(&self, capability: &str) -> bool {
        self.provides.iter().any(|p| p == capability)
    }

    /// Whether this plugin is a cluster strategy.
    pub fn is_cluster_strategy(&self) -> bool {
        self.provides(CLUSTER_STRATEGY)
    }

    /// The first `conflicts` entry naming `other` (by id or by one of its capabilities).
    pub fn conflict_with<'a>(&'a self, other: &Manifest) -> Option<&'a str> {
        self.conflicts.iter().find(|c| **c == other.id || other.provides(c)).map(String::as_str)
    }
}

fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// A wire-protocol version, `MAJOR.MINOR`: peers talk when their majors match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WireVersion {
    /// Incompatible changes bump this.
    pub major: u32,
    /// Compatible additions bump this.
    pub minor: u32,
}

impl WireVersion {
    /// Whether a member speaking `self` can talk to one speaking `other`.
    pub fn is_compatible_with(&self, other: &WireVersion) -> bool {
        self.major == other.major
    }
}

impl fmt::Display for WireVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl FromStr for WireVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("wire protocol version {s:?} is not MAJOR.MINOR (e.g. \"1.0\")");
        let (major, minor) = s.split_once('.').ok_or_else(bad)?;
        Ok(WireVersion { major: major.parse().map_err(|_| bad())?, minor: minor.parse().map_err(|_| bad())? })
    }
}

impl Serialize for WireVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for WireVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Compile-time check that a manifest value needs no escaping in TOML.
#[doc(hidden)]
pub const fn assert_plain(value: &str) {
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'"' || b == b'\\' || b < 0x20 {
            panic!("manifest values must not contain quotes, backslashes or control characters");
        }
        i += 1;
    }
}

/// Copies `text` into a fixed array followed by [`MANIFEST_PADDING`] spaces.
#[doc(hidden)]
pub const fn pad<const N: usize>(text: &str) -> [u8; N] {
    let bytes = text.as_bytes();
    let mut out = [b' '; N];
    let mut i = 0;
    while i < bytes.len() {
        out[i] = bytes[i];
        i += 1;
    }
    out
}

/// Embeds a manifest in the calling crate's [`MANIFEST_SECTION`].
///
/// `declare_plugin!` calls this; call it directly only for a library that
/// exports its root module by hand. Fields come in this order; `version`
/// defaults to the crate's `CARGO_PKG_VERSION` and `api_req` to
/// `^` + the API version the plugin was built against.
#[macro_export]
macro_rules! embed_manifest {
    (
        id: $id:literal,
        $(version: $version:literal,)?
        description: $description:literal,
        host_req: $host_req:literal,
        $(api_req: $api_req:literal,)?
        provides: [$($provides:literal),* $(,)?],
        conflicts: [$($conflicts:literal),* $(,)?],
        wire_protocol: $wire:literal $(,)?
    ) => {
        const __CLUSTERHOST_MANIFEST_TEXT: &str = $crate::__private::const_format::concatcp!(
            "manifest_format = 1\n",
            "id = \"", $id, "\"\n",
            "version = \"", $crate::__or_default!([$($version)?] env!("CARGO_PKG_VERSION")), "\"\n",
            "description = \"", $description, "\"\n",
            "host_req = \"", $host_req, "\"\n",
            "api_req = \"", $crate::__or_default!([$($api_req)?] $crate::__private::const_format::concatcp!("^", $crate::API_VERSION)), "\"\n",
            "provides = [", $("\"", $provides, "\", ",)* "]\n",
            "conflicts = [", $("\"", $conflicts, "\", ",)* "]\n",
            "wire_protocol = \"", $wire, "\"\n",
        );
        const _: () = {
            $crate::manifest::assert_plain($id);
            $crate::manifest::assert_plain($description);
            $crate::manifest::assert_plain($host_req);
            $crate::manifest::assert_plain($wire);
            $crate::manifest::assert_plain($crate::__or_default!([$($version)?] env!("CARGO_PKG_VERSION")));
            $($crate::manifest::assert_plain($api_req);)?
            $($crate::manifest::assert_plain($provides);)*
            $($crate::manifest::assert_plain($conflicts);)*
        };

        /// This plugin's manifest, read by the host without loading the library.
        #[used]
        #[unsafe(no_mangle)]
        #[unsafe(link_section = ".clusterhost.manifest")]
        pub static CLUSTERHOST_MANIFEST: [u8; __CLUSTERHOST_MANIFEST_TEXT.len() + $crate::manifest::MANIFEST_PADDING] =
            $crate::manifest::pad(__CLUSTERHOST_MANIFEST_TEXT);

        /// The manifest as it is in the loaded file (read through the static,
        /// so a restamped manifest is seen as restamped).
        #[allow(dead_code)]
        pub fn clusterhost_manifest_text() -> &'static str {
            let bytes: &'static [u8] = ::core::hint::black_box(&CLUSTERHOST_MANIFEST);
            match ::core::str::from_utf8(bytes) {
                Ok(text) => text.trim_end_matches([' ', '\0', '\n']),
                Err(_) => "",
            }
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __or_default {
    ([] $default:expr) => {
        $default
    };
    ([$value:literal] $default:expr) => {
        $value
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
manifest_format = 1
id = "gossip"
version = "1.2.0"
description = "embedded clustering"
host_req = "^0.1"
api_req = "^0.1"
provides = ["cluster-strategy", ]
conflicts = ["legacy"]
wire_protocol = "1.0"
"#;

    #[test]
    fn parses_a_manifest_with_trailing_padding() {
        let m = Manifest::parse(&format!("{GOOD}{}", " ".repeat(MANIFEST_PADDING))).unwrap();
        assert_eq!(m.id, "gossip");
        assert_eq!(m.version, Version::new(1, 2, 0));
        assert!(m.is_cluster_strategy());
        assert_eq!(m.wire_protocol, WireVersion { major: 1, minor: 0 });
        assert_eq!(Manifest::parse(&m.to_toml()).unwrap(), m);
    }

    #[test]
    fn rejects_bad_id_version_and_unknown_fields() {
        let bad_id = GOOD.replace("\"gossip\"", "\"Gossip!\"");
        assert_eq!(Manifest::parse(&bad_id), Err(ManifestError::InvalidId("Gossip!".into())));
        let bad_version = GOOD.replace("\"1.2.0\"", "\"one\"");
        assert!(matches!(Manifest::parse(&bad_version), Err(ManifestError::Malformed(m)) if m.contains("version")));
        let unknown = format!("{GOOD}colour = \"red\"\n");
        assert!(matches!(Manifest::parse(&unknown), Err(ManifestError::Malformed(m)) if m.contains("colour")));
        let future = GOOD.replace("manifest_format = 1", "manifest_format = 2");
        assert_eq!(Manifest::parse(&future), Err(ManifestError::UnsupportedFormat { found: 2 }));
    }

    #[test]
    fn conflicts_match_ids_and_capabilities() {
        let a = Manifest::parse(GOOD).unwrap();
        let mut legacy = a.clone();
        legacy.id = "legacy".into();
        legacy.provides = vec![];
        assert_eq!(a.conflict_with(&legacy), Some("legacy"));
        let mut by_capability = a.clone();
        by_capability.id = "other".into();
        by_capability.conflicts = vec![CLUSTER_STRATEGY.into()];
        assert_eq!(by_capability.conflict_with(&a), Some(CLUSTER_STRATEGY));
        assert_eq!(a.conflict_with(&a.clone()), None);
    }
}
