//! Split-brain protection: per cache, a minimum number of members this
//! node must see for a write to that cache to be accepted
//! (`cache.<name>.min.members` in conf/clusterhost.properties, `*` for
//! every cache without its own; reads too with `cache.protection.reads =
//! refuse`). On the smaller side of a partition the writes are refused
//! with the rule and the sizes, so the two sides cannot accept conflicting
//! writes to it; the side that has enough members goes on. It applies
//! while this node is meant to be clustered (a strategy in service and
//! clustering enabled): clustered, it counts the members its strategy
//! lists; starting, or standalone after it lost its cluster, it counts
//! itself alone. A node standalone by choice (no strategy, or clustering
//! disabled) is not protected.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use super::ClusterError;

/// The rules, as the properties set them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Protection {
    /// Cache name (or `*`) -> the fewest members that may write it.
    pub min_members: BTreeMap<String, u32>,
    /// Reads of a protected cache are refused too.
    pub refuse_reads: bool,
}

impl Protection {
    /// The minimum for `cache`: its own rule, else the `*` rule.
    pub fn min_for(&self, cache: &str) -> Option<u32> {
        self.min_members.get(cache).or_else(|| self.min_members.get("*")).copied()
    }
}

/// Not counted: this node is not meant to be clustered (no protection).
const NOT_CLUSTERING: usize = usize::MAX;

/// The rules and the member count the caches check them against. Part of
/// the cache factory.
pub(crate) struct Guard {
    /// Any rule at all: the check costs one load when there is none.
    any: AtomicBool,
    rules: RwLock<Protection>,
    /// The members this node sees, [`NOT_CLUSTERING`] when none count.
    members: AtomicUsize,
}

impl Default for Guard {
    fn default() -> Self {
        Guard {
            any: AtomicBool::new(false),
            rules: RwLock::new(Protection::default()),
            members: AtomicUsize::new(NOT_CLUSTERING),
        }
    }
}

/// One protected cache, as `/api/cluster` and `cluster status` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtectedCache {
    /// The cache name, or `*` for every cache without a rule of its own.
    pub cache: String,
    pub min_members: u32,
    /// The members this node counts now (absent while it is not meant to be clustered).
    pub members_seen: Option<u32>,
    /// Whether writes (and, with `cache.protection.reads = refuse`, reads) are refused now.
    pub refusing: bool,
}

impl Guard {
    /// Replaces the rules (a properties reload).
    pub fn apply(&self, protection: Protection) {
        self.any.store(!protection.min_members.is_empty(), Ordering::Relaxed);
        *self.rules.write().unwrap_or_else(|e| e.into_inner()) = protection;
    }

    /// This node sees `members` members (`None`: it is not meant to be clustered).
    pub fn set_members(&self, members: Option<usize>) {
        self.members.store(members.unwrap_or(NOT_CLUSTERING), Ordering::Relaxed);
    }

    /// Refuses an operation on `cache` (a write, or a read when reads are
    /// protected too) while this node sees fewer members than its rule.
    pub fn check(&self, cache: &str, write: bool) -> Result<(), ClusterError> {
        if !self.any.load(Ordering::Relaxed) {
            return Ok(());
        }
        let seen = self.members.load(Ordering::Relaxed);
        if seen == NOT_CLUSTERING {
            return Ok(());
        }
        let rules = self.rules.read().unwrap_or_else(|e| e.into_inner());
        let Some(min) = rules.min_for(cache) else { return Ok(()) };
        if seen >= min as usize || (!write && !rules.refuse_reads) {
            return Ok(());
        }
        let rule = if rules.min_members.contains_key(cache) { cache } else { "*" };
        Err(ClusterError::Protected {
            cache: cache.to_string(),
            rule: format!("cache.{rule}.min.members = {min}"),
            min,
            seen: seen as u32,
            op: if write { "write" } else { "read" },
        })
    }

    /// The rules with where this node stands against each.
    pub fn status(&self) -> Vec<ProtectedCache> {
        let seen = self.members.load(Ordering::Relaxed);
        let seen = (seen != NOT_CLUSTERING).then_some(seen as u32);
        let rules = self.rules.read().unwrap_or_else(|e| e.into_inner());
        rules
            .min_members
            .iter()
            .map(|(cache, min)| ProtectedCache {
                cache: cache.clone(),
                min_members: *min,
                members_seen: seen,
                refusing: seen.is_some_and(|s| s < *min),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(rules: &[(&str, u32)], refuse_reads: bool) -> Guard {
        let guard = Guard::default();
        guard.apply(Protection { min_members: rules.iter().map(|(c, n)| (c.to_string(), *n)).collect(), refuse_reads });
        guard
    }

    #[test]
    fn a_side_below_the_minimum_refuses_writes_and_names_the_rule_and_sizes() {
        let guard = guard(&[("sessions", 2)], false);
        // Not meant to be clustered: nothing is refused.
        assert!(guard.check("sessions", true).is_ok());
        guard.set_members(Some(1));
        let err = guard.check("sessions", true).unwrap_err().to_string();
        assert!(err.contains("cache.sessions.min.members = 2") && err.contains("sees 1 member"), "{err}");
        assert!(guard.check("sessions", false).is_ok(), "reads stay allowed");
        assert!(guard.check("rooms", true).is_ok(), "a cache without a rule");
        guard.set_members(Some(2));
        assert!(guard.check("sessions", true).is_ok());
        let status = guard.status();
        assert_eq!(status.len(), 1);
        assert!(!status[0].refusing && status[0].members_seen == Some(2));
    }

    #[test]
    fn the_star_rule_covers_other_caches_and_reads_can_be_refused() {
        let guard = guard(&[("*", 3), ("cheap", 1)], true);
        guard.set_members(Some(2));
        let err = guard.check("rooms", false).unwrap_err().to_string();
        assert!(err.contains("cache.*.min.members = 3") && err.contains("read"), "{err}");
        assert!(guard.check("cheap", true).is_ok(), "its own rule wins over *");
        assert!(guard.status().iter().any(|p| p.cache == "*" && p.refusing));
    }
}
