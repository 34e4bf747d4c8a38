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
//!   each value prefixed by its version (16 hex digits, ms);
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
}
