//! Where this cluster lives in Redis: every key and channel name.
//!
//! P is `key_prefix`; `{P}` is a hash tag, so the membership keys share one
//! Redis Cluster slot and can be read together:
//! - `{P}:member:<id>`: the member's record, expiring after `member_ttl_ms`
//!   unless refreshed; `{P}:joins`: sorted set of ids by join number
//!   (`{P}:seq`); the senior is the live member with the lowest number;
//! - `{P}:settings`: hash of cluster-wide settings;
//!   `{P}:caches`: set of cache names;
//! - `P:cache:<name>`: one hash per cache (a cache lives on one slot), or
//!   with `partitions` above 1 one hash per partition,
//!   `P:cache:<name>:<i>.<salt>` (crate::partitions), each with the keys
//!   below on its own slot; `{P}:layout`: each spread cache's partitions,
//!   each value prefixed by its version (16 hex digits, ms); beside it, on
//!   its slot (`{T}` below is what Redis Cluster hashes of that key: the
//!   whole key, or its own hash tag), `{T}:listeners` (the members that
//!   listen to the cache: its changes are published only while it exists),
//!   and for a bounded cache `{T}:meta` (its bounds and byte count),
//!   `{T}:used` (order of use), `{T}:born` (write times, for the cache's
//!   time to live) and `{T}:own` (deadlines of entries with a time to live
//!   of their own); `{P}:bounded`: set of the caches that have a `meta`;
//! - `P:lock:{<name>}` and `P:fence:{<name>}`: a lock and its fencing counter;
//!   `{P}:held:<id>`: the names of the locks member `id` holds (single and
//!   Sentinel modes, where a member found dead on its connections has its
//!   locks released at once instead of when their leases expire);
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
        partition_keys(self.cache(name), cluster)
    }
    /// `{P}:layout`: how many partitions each spread cache has (`*`: the
    /// cluster's `partitions`), written by the first member that writes it.
    pub(crate) fn layout(&self) -> String {
        format!("{{{}}}:layout", self.prefix)
    }
    /// `{P}:gathering`: the spread caches being gathered onto one partition.
    pub(crate) fn gathering(&self) -> String {
        format!("{{{}}}:gathering", self.prefix)
    }
    /// The hash of partition `index` of the `count` of cache `name` (the
    /// cache's own hash when it has one partition): its name carries a
    /// salt that puts its slot in the `index`-th of `count` equal ranges
    /// of Redis Cluster's 16384, so the partitions spread evenly over the
    /// masters (each owns ranges of slots). `None` when the name holds a
    /// brace (its hash tag would pin every partition to one slot).
    pub(crate) fn partition(&self, name: &str, index: u32, count: u32) -> Option<String> {
        if count <= 1 {
            return Some(self.cache(name));
        }
        if name.contains(['{', '}']) || index >= count {
            return None;
        }
        let (low, high) = (u32::from(SLOTS) * index / count, u32::from(SLOTS) * (index + 1) / count);
        // Each try lands in the range with odds 1/count: 64 × count tries
        // fail with odds about e^-64.
        (0..64 * count).map(|salt| format!("{}:{index}.{salt}", self.cache(name))).find(|key| {
            let slot = u32::from(slot(key));
            (low..high).contains(&slot)
        })
    }
    pub(crate) fn held(&self, id: &str) -> String {
        format!("{{{}}}:held:{id}", self.prefix)
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

/// Redis Cluster's slots.
pub(crate) const SLOTS: u16 = 16384;

/// The Redis Cluster slot of `key`: CRC16 (XMODEM) of what it hashes, as
/// Redis computes it.
pub(crate) fn slot(key: &str) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(hashed(key).as_bytes()) % SLOTS
}

/// Which of `count` partitions holds the entry under `key`: CRC16 of the
/// key's bytes, so every member (and version) puts it in the same one.
pub(crate) fn partition_of(key: &[u8], count: u32) -> u32 {
    u32::from(crc16::State::<crc16::XMODEM>::calculate(key)) % count.max(1)
}

/// Every key of the cache hash `data` (a cache's, or one partition's), in
/// the order the cache scripts take them; `None` as in [`Keys::cache_keys`].
pub(crate) fn partition_keys(data: String, cluster: bool) -> Option<[String; 6]> {
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
