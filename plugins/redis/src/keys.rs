//! Where this cluster lives in Redis: every key and channel name.
//!
//! P is `key_prefix`; `{P}` is a hash tag, so the membership keys share one
//! Redis Cluster slot and can be read together:
//! - `{P}:member:<id>`: the member's record, expiring after `member_ttl_ms`
//!   unless refreshed; `{P}:joins`: sorted set of ids by join number
//!   (`{P}:seq`); the senior is the live member with the lowest number;
//! - `{P}:settings`: hash of cluster-wide settings;
//!   `{P}:caches`: set of cache names;
//! - `P:cache:<name>`: one hash per cache (a cache lives on one slot),
//!   each value prefixed by its version (16 hex digits, ms); beside it, on
//!   its slot (`{T}` below is what Redis Cluster hashes of that key: the
//!   whole key, or its own hash tag), `{T}:listeners` (the members that
//!   listen to the cache: its changes are published only while it exists),
//!   and for a bounded cache `{T}:meta` (its bounds and byte count),
//!   `{T}:used` (order of use), `{T}:born` (write times, for the cache's
//!   time to live) and `{T}:own` (deadlines of entries with a time to live
//!   of their own); `{P}:bounded`: set of the caches that have a `meta`;
//! - `P:lock:{<name>}` and `P:fence:{<name>}`: a lock and its fencing counter;
//! - channels `P:events`, `P:entries` (entry events), `P:task:<id>`, `P:reply:<id>`.

/// The names of this cluster's keys and channels, all under `key_prefix`.
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Keys {
        Keys { prefix: prefix.to_string() }
    }
    pub(crate) fn member(&self, id: &str) -> String {
        format!("{{{}}}:member:{id}", self.prefix)
    }
    pub(crate) fn joins(&self) -> String {
        format!("{{{}}}:joins", self.prefix)
    }
    pub(crate) fn seq(&self) -> String {
        format!("{{{}}}:seq", self.prefix)
    }
    pub(crate) fn settings(&self) -> String {
        format!("{{{}}}:settings", self.prefix)
    }
    pub(crate) fn caches(&self) -> String {
        format!("{{{}}}:caches", self.prefix)
    }
    pub(crate) fn cache(&self, name: &str) -> String {
        format!("{}:cache:{name}", self.prefix)
    }
    pub(crate) fn bounded(&self) -> String {
        format!("{{{}}}:bounded", self.prefix)
    }
    /// Every key of cache `name`, in the order the cache scripts take them
    /// (their `KEYS`). `None` when no key can share the hash's Redis
    /// Cluster slot (its name holds a `}` outside a hash tag); outside
    /// cluster mode slots do not matter and the keys are always there.
    pub(crate) fn cache_keys(&self, name: &str, cluster: bool) -> Option<[String; 6]> {
        let data = self.cache(name);
        let hashed = hashed(&data);
        let base = if !hashed.contains('}') {
            format!("{{{hashed}}}")
        } else if cluster {
            return None;
        } else {
            data.clone()
        };
        let beside = |suffix: &str| format!("{base}:{suffix}");
        Some([data, beside("listeners"), beside("meta"), beside("used"), beside("born"), beside("own")])
    }
    pub(crate) fn lock(&self, name: &str) -> String {
        format!("{}:lock:{{{name}}}", self.prefix)
    }
    pub(crate) fn fence(&self, name: &str) -> String {
        format!("{}:fence:{{{name}}}", self.prefix)
    }
    pub(crate) fn events(&self) -> String {
        format!("{}:events", self.prefix)
    }
    pub(crate) fn entries(&self) -> String {
        format!("{}:entries", self.prefix)
    }
    pub(crate) fn tasks(&self, id: &str) -> String {
        format!("{}:task:{id}", self.prefix)
    }
    pub(crate) fn replies(&self, id: &str) -> String {
        format!("{}:reply:{id}", self.prefix)
    }
}

/// What Redis Cluster hashes of `key` to find its slot: the text between
/// its first `{` and the next `}` when that is not empty, else the whole key.
fn hashed(key: &str) -> &str {
    if let Some(open) = key.find('{') {
        let rest = &key[open + 1..];
        if let Some(close) = rest.find('}').filter(|close| *close > 0) {
            return &rest[..close];
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_keys_share_a_slot_and_locks_pair_with_their_fence() {
        let k = Keys { prefix: "p".into() };
        assert_eq!(k.member("a"), "{p}:member:a");
        assert_eq!(k.joins(), "{p}:joins");
        assert_eq!(k.lock("orders"), "p:lock:{orders}");
        assert_eq!(k.fence("orders"), "p:fence:{orders}");
    }

    #[test]
    fn a_caches_keys_share_the_slot_of_its_hash() {
        let k = Keys { prefix: "p".into() };
        let keys = k.cache_keys("users", true).expect("a plain name");
        assert_eq!(keys[0], "p:cache:users");
        assert_eq!(keys[2], "{p:cache:users}:meta");
        assert!(keys.iter().all(|key| hashed(key) == "p:cache:users"), "{keys:?}");
        // A name with a hash tag of its own: the others use that tag.
        let keys = k.cache_keys("a{t}b", true).expect("a tag");
        assert!(keys.iter().all(|key| hashed(key) == "t"), "{keys:?}");
        // A `}` outside a tag cannot be written inside one (an empty tag
        // is no tag: the whole key is hashed).
        assert_eq!(k.cache_keys("a}b", true), None);
        assert_eq!(k.cache_keys("a{}b", true), None);
        assert_eq!(hashed("p:cache:a{}b"), "p:cache:a{}b");
        assert_eq!(k.cache_keys("a}b", false).expect("no slots outside cluster mode")[2], "p:cache:a}b:meta");
    }
}
