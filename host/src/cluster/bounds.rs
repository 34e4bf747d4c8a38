//! Bounded caches, as configured: per cache, a maximum entry count and
//! byte size (least recently used evicted first), a time to live and a
//! max idle time. Set Openfire-style in conf/clusterhost.properties
//! (`cache.<name>.max.entries`, `cache.<name>.max.bytes`,
//! `cache.<name>.ttl.ms`, `cache.<name>.max.idle.ms`; live edits apply at
//! once) and in code when a cache is opened
//! ([`ClusterManager::bounded_cache`](super::ClusterManager::bounded_cache));
//! a property wins over the code's value for its field. The host sends the
//! resulting [`CacheBounds`] to the standalone strategy and to the plugin
//! strategy in service; the strategy applies them (docs/cluster.md,
//! "Bounded caches").

use std::collections::BTreeMap;

use clusterhost_plugin_api::cluster::CacheBounds;
use serde::{Deserialize, Serialize};

/// The bounds the properties set for one cache: each field only where a
/// key sets it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BoundsSetting {
    pub max_entries: Option<u64>,
    pub max_bytes: Option<u64>,
    pub ttl_ms: Option<u64>,
    pub max_idle_ms: Option<u64>,
}

/// The property key suffixes, with the largest value each takes.
pub const KEYS: [(&str, u64); 4] = [
    ("max.entries", 1 << 40),
    ("max.bytes", 1 << 50),
    ("ttl.ms", 100 * 365 * 86_400_000),
    ("max.idle.ms", 100 * 365 * 86_400_000),
];

impl BoundsSetting {
    /// Sets the field a key `suffix` (one of [`KEYS`]) names to `value`.
    pub fn set(&mut self, suffix: &str, value: u64) -> bool {
        let field = match suffix {
            "max.entries" => &mut self.max_entries,
            "max.bytes" => &mut self.max_bytes,
            "ttl.ms" => &mut self.ttl_ms,
            "max.idle.ms" => &mut self.max_idle_ms,
            _ => return false,
        };
        *field = Some(value);
        true
    }

    /// The fields that are set, as (key suffix, value).
    pub fn keys(&self) -> Vec<(&'static str, u64)> {
        let fields = [self.max_entries, self.max_bytes, self.ttl_ms, self.max_idle_ms];
        KEYS.iter().zip(fields).filter_map(|((key, _), value)| value.map(|v| (*key, v))).collect()
    }

    /// These settings over `coded` (what the code that opened the cache asked for).
    pub fn over(&self, coded: CacheBounds) -> CacheBounds {
        CacheBounds {
            max_entries: self.max_entries.unwrap_or(coded.max_entries),
            max_bytes: self.max_bytes.unwrap_or(coded.max_bytes),
            ttl_ms: self.ttl_ms.unwrap_or(coded.ttl_ms),
            max_idle_ms: self.max_idle_ms.unwrap_or(coded.max_idle_ms),
        }
    }
}

/// Every cache's bounds: from the properties, from code, and what a
/// strategy refused.
#[derive(Debug, Default)]
pub(crate) struct BoundsTable {
    configured: BTreeMap<String, BoundsSetting>,
    coded: BTreeMap<String, CacheBounds>,
    /// Cache -> why the strategy in service refused its bounds (cleared
    /// when they are next applied).
    refused: BTreeMap<String, String>,
}

impl BoundsTable {
    /// The bounds in force for `cache`.
    pub fn of(&self, cache: &str) -> CacheBounds {
        let coded = self.coded.get(cache).copied().unwrap_or_default();
        self.configured.get(cache).map_or(coded, |setting| setting.over(coded))
    }

    /// Every cache with bounds configured anywhere, with them (unbounded
    /// ones too, when a setting made them so).
    pub fn all(&self) -> Vec<(String, CacheBounds)> {
        let mut names: Vec<&String> = self.configured.keys().chain(self.coded.keys()).collect();
        names.sort();
        names.dedup();
        names.into_iter().map(|name| (name.clone(), self.of(name))).collect()
    }

    /// Replaces the properties' settings; the caches whose bounds changed.
    pub fn configure(&mut self, configured: BTreeMap<String, BoundsSetting>) -> Vec<(String, CacheBounds)> {
        let before: BTreeMap<String, CacheBounds> = self.all().into_iter().collect();
        self.configured = configured;
        let after = self.all();
        let mut changed: Vec<(String, CacheBounds)> =
            after.iter().filter(|(name, bounds)| before.get(name) != Some(bounds)).cloned().collect();
        // A cache whose settings were removed goes back to unbounded.
        for name in before.keys() {
            if !after.iter().any(|(n, _)| n == name) {
                changed.push((name.clone(), CacheBounds::NONE));
            }
        }
        changed
    }

    /// Sets what code asked for `cache`; the bounds now in force.
    pub fn code(&mut self, cache: &str, bounds: CacheBounds) -> CacheBounds {
        self.coded.insert(cache.to_string(), bounds);
        self.of(cache)
    }

    /// Records the outcome of sending `cache`'s bounds to the strategy in service.
    pub fn outcome(&mut self, cache: &str, refusal: Option<String>) {
        match refusal {
            Some(reason) => self.refused.insert(cache.to_string(), reason),
            None => self.refused.remove(cache),
        };
    }

    /// Forgets every refusal (the strategy that refused left service).
    pub fn clear_refusals(&mut self) {
        self.refused.clear();
    }

    /// Every bounded cache, as status shows it.
    pub fn status(&self) -> Vec<BoundedCache> {
        self.all()
            .into_iter()
            .filter(|(_, bounds)| !bounds.is_none())
            .map(|(cache, bounds)| BoundedCache { refused: self.refused.get(&cache).cloned(), bounds, cache })
            .collect()
    }
}

/// One bounded cache, as `/api/caches` and the console show it (0: no bound of that kind).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundedCache {
    pub cache: String,
    /// `max_entries`, `max_bytes`, `ttl_ms`, `max_idle_ms`, beside `cache` in JSON.
    #[serde(flatten)]
    pub bounds: CacheBounds,
    /// Why the strategy in service refused these bounds, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

impl BoundedCache {
    /// The bounds in a line ("max 100 entries, ttl 30 s"), with the refusal if any.
    pub fn summary(&self) -> String {
        match &self.refused {
            Some(reason) => format!("{} (refused by the strategy: {reason})", self.bounds),
            None => self.bounds.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(pairs: &[(&str, u64)]) -> BoundsSetting {
        let mut s = BoundsSetting::default();
        for (key, value) in pairs {
            assert!(s.set(key, *value));
        }
        s
    }

    #[test]
    fn a_property_wins_over_the_code_field_by_field_and_its_removal_unbounds_the_cache() {
        let mut table = BoundsTable::default();
        let coded = CacheBounds { max_entries: 100, ttl_ms: 5_000, ..CacheBounds::NONE };
        assert_eq!(table.code("routes", coded), coded);
        let changed = table.configure([("routes".to_string(), setting(&[("max.entries", 10)]))].into());
        assert_eq!(
            changed,
            vec![("routes".to_string(), CacheBounds { max_entries: 10, ttl_ms: 5_000, ..CacheBounds::NONE })]
        );
        let changed = table.configure([("other".to_string(), setting(&[("ttl.ms", 1)]))].into());
        assert!(changed.contains(&("routes".to_string(), coded)), "back to the code's bounds: {changed:?}");
        assert!(changed.contains(&("other".to_string(), CacheBounds { ttl_ms: 1, ..CacheBounds::NONE })));
        let changed = table.configure(BTreeMap::new());
        assert_eq!(changed, vec![("other".to_string(), CacheBounds::NONE)]);
        assert_eq!(table.of("routes"), coded);
        assert!(table.configure(BTreeMap::new()).is_empty(), "nothing changed");
    }
}
