//! The cluster-strategy contract: the `abi_stable` types a strategy plugin
//! and the host exchange, and the plain Rust types both sides use on top.
//!
//! Growth rule (see docs/cluster.md, "How the contract grows"): the traits grow only by
//! appending methods after their `#[sabi(last_prefix_field)]`; plain
//! structs never change; kinds (events, targets, outcomes) are `u32`
//! constants, so a value a side does not know is ignored, never undefined.

// `#[sabi_trait]` expands to impls inside a const block (a lint since Rust 1.80).
#![allow(non_local_definitions)]

use abi_stable::std_types::{RArc, RBox, ROption, RResult, RSlice, RStr, RString, RVec, Tuple2};
use abi_stable::{sabi_trait, StableAbi};
use async_ffi::FfiFuture;

use crate::abi::PluginError;

/// A cluster member, as the strategy reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member's id (its node name, unique in the cluster).
    pub id: String,
    /// Where its strategy listens (`host:port`), or an empty string.
    pub address: String,
    /// When the member's clustering generation started (ms since the Unix epoch).
    pub started_at_ms: u64,
    /// The strategy plugin's version on that member.
    pub plugin_version: String,
}

/// One cache entry; `version` orders writes for merges (ms since the Unix
/// epoch of the write, 0 when unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub version: u64,
}

/// What a strategy tells the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrategyEvent {
    /// A member joined the cluster (this node when `member` is the local id).
    Joined { member: String },
    /// A member left the cluster (this node when `member` is the local id).
    Left { member: String },
    /// `member` is now the senior member.
    SeniorChanged { member: String },
    /// A cluster-wide setting changed (on any member, this one included).
    SettingChanged { key: String, value: String },
}

/// Where a task goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskTarget {
    /// Every member, this one included.
    All,
    /// Every member but this one.
    Others,
    /// One member, by id.
    Member(String),
    /// The senior member.
    Senior,
}

/// How a task ended on one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskOutcome {
    /// The handler's answer.
    Value(Vec<u8>),
    /// The handler failed, or the member could not run it.
    Error(String),
    /// No answer within the budget.
    TimedOut,
}

/// One member's answer to a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskReply {
    pub member: String,
    pub outcome: TaskOutcome,
}

/// An entry's value with its version. Every write of a key stamps a
/// version greater than the one it replaces (the cluster time in ms, or
/// the previous version + 1 when that is not greater), so a version names
/// one write of the key for as long as the entry exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: Vec<u8>,
    pub version: u64,
}

/// What a conditional write expects to find under its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// The entry holds exactly these bytes.
    Value(Vec<u8>),
    /// The entry carries this version (see [`Versioned`]).
    Version(u64),
}

impl Expected {
    /// Whether `current` is what this expects.
    pub fn matches(&self, current: &Versioned) -> bool {
        match self {
            Expected::Value(value) => *value == current.value,
            Expected::Version(version) => *version == current.version,
        }
    }
}

/// How an atomic cache operation ended: whether it applied, and the entry
/// under the key afterwards (the new one when it applied, the one that
/// stopped it when it did not; `None` when there is none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasOutcome {
    pub applied: bool,
    pub current: Option<Versioned>,
}

/// The optional capabilities a strategy reports ([`Strategy::capabilities`](crate::Strategy::capabilities)).
/// Later additions to the contract (bounded caches) each get a bit of
/// their own here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities(pub u64);

impl Capabilities {
    /// None of the optional capabilities.
    pub const NONE: Capabilities = Capabilities(0);
    /// Atomic cache operations: `cache_get_versioned`, `cache_put_if_absent`,
    /// `cache_replace_if`, `cache_remove_if`, each atomic per key.
    pub const ATOMIC: Capabilities = Capabilities(capability::ATOMIC);
    /// Fenced locks (API 0.1.2): `lock_fence` answers the fencing number
    /// of a held lock.
    pub const FENCED_LOCKS: Capabilities = Capabilities(capability::FENCED_LOCKS);
    /// Entry events (API 0.1.2): the strategy reports every change of an
    /// entry it applies, on any member, through [`ClusterHost::emit_cache_event`](crate::ClusterHost::emit_cache_event).
    pub const ENTRY_EVENTS: Capabilities = Capabilities(capability::ENTRY_EVENTS);
    /// Bounded caches (API 0.1.3): `cache_configure` applies a cache's
    /// [`CacheBounds`] and `cache_put_ttl` writes an entry with a time to
    /// live of its own.
    pub const BOUNDED: Capabilities = Capabilities(capability::BOUNDED);
    /// Entry times (API 0.1.4): `cache_expiries` tells when entries expire.
    pub const ENTRY_TIMES: Capabilities = Capabilities(capability::ENTRY_TIMES);

    /// Whether every capability of `other` is in `self`.
    pub fn contains(self, other: Capabilities) -> bool {
        self.0 & other.0 == other.0
    }

    /// Both sets together.
    pub fn with(self, other: Capabilities) -> Capabilities {
        Capabilities(self.0 | other.0)
    }
}

/// What happened to an entry ([`CacheEvent::kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryEventKind {
    /// The key had no entry on this member; it has one now.
    Added,
    /// The key's entry was replaced by a newer one.
    Updated,
    /// The key's entry was removed (a remove, a clear, a remove-if).
    Removed,
    /// The entry outlived its time to live or its max idle time ([`CacheBounds`]).
    Expired,
    /// The entry was evicted by a size bound ([`CacheBounds`]).
    Evicted,
}

impl EntryEventKind {
    /// The kind as it crosses ([`entry_kind`]).
    pub fn code(self) -> u32 {
        match self {
            EntryEventKind::Added => entry_kind::ADDED,
            EntryEventKind::Updated => entry_kind::UPDATED,
            EntryEventKind::Removed => entry_kind::REMOVED,
            EntryEventKind::Expired => entry_kind::EXPIRED,
            EntryEventKind::Evicted => entry_kind::EVICTED,
        }
    }

    /// The kind of `code`, or `None` for one this version does not know.
    pub fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            entry_kind::ADDED => EntryEventKind::Added,
            entry_kind::UPDATED => EntryEventKind::Updated,
            entry_kind::REMOVED => EntryEventKind::Removed,
            entry_kind::EXPIRED => EntryEventKind::Expired,
            entry_kind::EVICTED => EntryEventKind::Evicted,
            _ => return None,
        })
    }

    /// Its name in event streams and logs (`added`, `updated`, ...).
    pub fn name(self) -> &'static str {
        match self {
            EntryEventKind::Added => "added",
            EntryEventKind::Updated => "updated",
            EntryEventKind::Removed => "removed",
            EntryEventKind::Expired => "expired",
            EntryEventKind::Evicted => "evicted",
        }
    }
}

/// A change of one entry, as a strategy reports it to the host (API
/// 0.1.2, with [`Capabilities::ENTRY_EVENTS`]): on the member that made it
/// and on every member that applied it. Report the changes of one key in
/// the order they were applied to what this member holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEvent {
    pub kind: EntryEventKind,
    pub cache: String,
    pub key: Vec<u8>,
    /// The new value (added, updated); `None` for a removal, or when the
    /// strategy did not carry it (say so in its docs).
    pub value: Option<Vec<u8>>,
    /// The version of the write (of the entry removed, for a removal; 0 when unknown).
    pub version: u64,
    /// The member the change came from (whose API call made it).
    pub origin: String,
}

/// The bounds of one cache (API 0.1.3, [`Capabilities::BOUNDED`]); 0 in a
/// field means no bound of that kind. Configured cluster-wide (every
/// member's host sends the same bounds, from its properties or from the
/// code that opened the cache) and applied by the strategy: docs/cluster.md,
/// "Bounded caches", states what each strategy does with them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct CacheBounds {
    /// At most this many entries; beyond it the least recently used entry
    /// is evicted (`Evicted` event).
    pub max_entries: u64,
    /// At most this many bytes of keys plus values; beyond it the least
    /// recently used entries are evicted (an entry larger than the bound
    /// alone is evicted at once).
    pub max_bytes: u64,
    /// Every entry expires this many ms after its write (`Expired` event),
    /// unless it was written with a time to live of its own.
    pub ttl_ms: u64,
    /// An entry neither read nor written for this many ms expires.
    pub max_idle_ms: u64,
}

impl CacheBounds {
    /// No bound at all (an ordinary cache).
    pub const NONE: CacheBounds = CacheBounds { max_entries: 0, max_bytes: 0, ttl_ms: 0, max_idle_ms: 0 };

    /// Whether no bound is set.
    pub fn is_none(&self) -> bool {
        *self == CacheBounds::NONE
    }

    /// Whether a size bound (entries or bytes) is set: eviction needs the
    /// order of use.
    pub fn is_sized(&self) -> bool {
        self.max_entries > 0 || self.max_bytes > 0
    }
}

impl std::fmt::Display for CacheBounds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_none() {
            return f.write_str("unbounded");
        }
        let mut parts = Vec::new();
        if self.max_entries > 0 {
            parts.push(format!("max {} entries", self.max_entries));
        }
        if self.max_bytes > 0 {
            parts.push(format!("max {} bytes", self.max_bytes));
        }
        let time = |ms: u64| {
            if ms >= 1000 && ms.is_multiple_of(1000) {
                format!("{} s", ms / 1000)
            } else {
                format!("{ms} ms")
            }
        };
        if self.ttl_ms > 0 {
            parts.push(format!("ttl {}", time(self.ttl_ms)));
        }
        if self.max_idle_ms > 0 {
            parts.push(format!("max idle {}", time(self.max_idle_ms)));
        }
        f.write_str(&parts.join(", "))
    }
}

/// Size of a cache as held by this member.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheSize {
    pub entries: u64,
    pub bytes: u64,
}

// ---- the boundary types ----

/// Event kinds of [`FfiEvent::kind`].
pub mod event_kind {
    pub const JOINED: u32 = 1;
    pub const LEFT: u32 = 2;
    pub const SENIOR_CHANGED: u32 = 3;
    pub const SETTING_CHANGED: u32 = 4;
}

/// Target kinds of [`FfiTarget::kind`].
pub mod target_kind {
    pub const ALL: u32 = 1;
    pub const OTHERS: u32 = 2;
    pub const MEMBER: u32 = 3;
    pub const SENIOR: u32 = 4;
}

/// Capability bits of [`ClusterStrategy::capabilities`] (API 0.1.1 and later).
pub mod capability {
    /// Atomic cache operations (put-if-absent, replace-if, remove-if, get with version).
    pub const ATOMIC: u64 = 1;
    /// Entry events through [`ClusterCallbacks::cache_event`](super::ClusterCallbacks::cache_event) (API 0.1.2).
    pub const ENTRY_EVENTS: u64 = 2;
    /// Fencing numbers for held locks ([`ClusterStrategy::lock_fence`](super::ClusterStrategy::lock_fence), API 0.1.2).
    pub const FENCED_LOCKS: u64 = 4;
    /// Bounded caches ([`ClusterStrategy::cache_configure`](super::ClusterStrategy::cache_configure)
    /// and [`ClusterStrategy::cache_put_ttl`](super::ClusterStrategy::cache_put_ttl), API 0.1.3).
    pub const BOUNDED: u64 = 8;
    /// When entries expire ([`ClusterStrategy::cache_expiries`](super::ClusterStrategy::cache_expiries), API 0.1.4).
    pub const ENTRY_TIMES: u64 = 16;
}

/// Kinds of [`FfiCacheEvent::kind`] (API 0.1.2).
pub mod entry_kind {
    pub const ADDED: u32 = 1;
    pub const UPDATED: u32 = 2;
    pub const REMOVED: u32 = 3;
    /// An entry outlived its time to live or its max idle time (API 0.1.3 strategies).
    pub const EXPIRED: u32 = 4;
    /// An entry was evicted by a size bound (API 0.1.3 strategies).
    pub const EVICTED: u32 = 5;
}

/// Kinds of [`FfiExpected::kind`].
pub mod expected_kind {
    /// The entry holds `value`.
    pub const VALUE: u32 = 1;
    /// The entry carries `version`.
    pub const VERSION: u32 = 2;
}

/// Outcome kinds of [`FfiTaskReply::outcome`].
pub mod outcome_kind {
    pub const VALUE: u32 = 1;
    pub const ERROR: u32 = 2;
    pub const TIMED_OUT: u32 = 3;
}

#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiMember {
    pub id: RString,
    pub address: RString,
    pub started_at_ms: u64,
    pub plugin_version: RString,
}

#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiEntry {
    pub key: RVec<u8>,
    pub value: RVec<u8>,
    pub version: u64,
}

#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiEvent {
    pub kind: u32,
    /// The member of a join / leave / senior change; the key of a setting.
    pub subject: RString,
    /// The value of a setting; empty otherwise.
    pub value: RString,
}

#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiTarget {
    pub kind: u32,
    pub member: RString,
}

#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiTaskReply {
    pub member: RString,
    pub outcome: u32,
    pub value: RVec<u8>,
    pub error: RString,
}

#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, Default)]
pub struct FfiCacheSize {
    pub entries: u64,
    pub bytes: u64,
}

#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiVersioned {
    pub value: RVec<u8>,
    pub version: u64,
}

#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiExpected {
    /// An [`expected_kind`].
    pub kind: u32,
    /// The value expected (kind VALUE); empty otherwise.
    pub value: RVec<u8>,
    /// The version expected (kind VERSION); 0 otherwise.
    pub version: u64,
}

#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiCasOutcome {
    pub applied: bool,
    pub current: ROption<FfiVersioned>,
}

/// A change of one entry, as it crosses (API 0.1.2; see [`CacheEvent`]).
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiCacheEvent {
    /// An [`entry_kind`].
    pub kind: u32,
    pub cache: RString,
    pub key: RVec<u8>,
    pub value: ROption<RVec<u8>>,
    pub version: u64,
    pub origin: RString,
}

/// A cache's bounds, as they cross (API 0.1.3; see [`CacheBounds`]).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct FfiCacheBounds {
    pub max_entries: u64,
    pub max_bytes: u64,
    pub ttl_ms: u64,
    pub max_idle_ms: u64,
}

impl From<CacheBounds> for FfiCacheBounds {
    fn from(b: CacheBounds) -> Self {
        FfiCacheBounds {
            max_entries: b.max_entries,
            max_bytes: b.max_bytes,
            ttl_ms: b.ttl_ms,
            max_idle_ms: b.max_idle_ms,
        }
    }
}

impl From<FfiCacheBounds> for CacheBounds {
    fn from(b: FfiCacheBounds) -> Self {
        CacheBounds { max_entries: b.max_entries, max_bytes: b.max_bytes, ttl_ms: b.ttl_ms, max_idle_ms: b.max_idle_ms }
    }
}

/// A boundary future resolving to `T` or a plugin error.
pub type Fut<T> = FfiFuture<RResult<T, PluginError>>;

/// What an appended method answers when the plugin's strategy predates it
/// (abi_stable calls the trait's default body when the plugin's vtable is
/// shorter). The host checks [`ClusterStrategy::capabilities`] first and
/// refuses with a message naming the strategy, so this is a last resort.
fn predates<T: 'static>(method: &str) -> Fut<T> {
    predates_in(method, "0.1.1")
}

/// [`predates`] for a method added in API `version`.
fn predates_in<T: 'static>(method: &str, version: &str) -> Fut<T> {
    let error = PluginError::unsupported(format!(
        "the strategy was built against a plugin API without {method} (added in API {version}); upgrade it"
    ));
    async_ffi::FutureExt::into_ffi(async move { RResult::RErr(error) })
}

/// A cluster strategy, as the host sees it. Every method is bounded by the
/// host; reads a strategy answers from its own memory complete as ready
/// futures on the caller's thread.
#[sabi_trait]
pub trait ClusterStrategy: Send + Sync {
    /// Joins the cluster (discovery, state transfer); resolves once joined.
    fn start_clustering(&self) -> Fut<()>;
    /// Leaves the cluster cleanly; the strategy stays loaded (settings still flow).
    fn stop_clustering(&self) -> Fut<()>;
    /// This member's id.
    fn local_member(&self) -> RString;
    /// The live members, this one included while joined.
    fn members(&self) -> RVec<FfiMember>;
    /// The senior member (the oldest live member), if joined.
    fn senior_member(&self) -> ROption<RString>;
    /// The cluster's time (ms since the Unix epoch).
    fn cluster_time_ms(&self) -> u64;

    fn cache_get(&self, cache: RStr<'_>, key: RSlice<'_, u8>) -> Fut<ROption<RVec<u8>>>;
    fn cache_put(&self, cache: RStr<'_>, key: RVec<u8>, value: RVec<u8>) -> Fut<()>;
    /// True if the key was present.
    fn cache_remove(&self, cache: RStr<'_>, key: RSlice<'_, u8>) -> Fut<bool>;
    fn cache_contains(&self, cache: RStr<'_>, key: RSlice<'_, u8>) -> Fut<bool>;
    fn cache_size(&self, cache: RStr<'_>) -> Fut<u64>;
    fn cache_clear(&self, cache: RStr<'_>) -> Fut<()>;
    fn cache_keys(&self, cache: RStr<'_>) -> Fut<RVec<RVec<u8>>>;
    fn cache_get_all(&self, cache: RStr<'_>, keys: RVec<RVec<u8>>) -> Fut<RVec<ROption<RVec<u8>>>>;
    fn cache_put_all(&self, cache: RStr<'_>, entries: RVec<FfiEntry>) -> Fut<()>;
    /// Merges entries by the strategy's merge policy (used when a member's
    /// standalone entries move into the cluster).
    fn cache_merge(&self, cache: RStr<'_>, entries: RVec<FfiEntry>) -> Fut<()>;
    /// The entries this member holds (answered locally; also right after
    /// this member lost the cluster).
    fn cache_entries(&self, cache: RStr<'_>) -> Fut<RVec<FfiEntry>>;
    /// The names of the clustered caches this member knows.
    fn cache_names(&self) -> Fut<RVec<RString>>;
    /// Entries and bytes this member holds for `cache`.
    fn cache_local_size(&self, cache: RStr<'_>) -> Fut<FfiCacheSize>;

    /// Waits until `name` is locked for `owner`.
    fn lock(&self, name: RStr<'_>, owner: RStr<'_>) -> Fut<()>;
    /// Locks `name` for `owner` if that happens within `timeout_ms`.
    fn try_lock(&self, name: RStr<'_>, owner: RStr<'_>, timeout_ms: u64) -> Fut<bool>;
    /// Releases `name` if `owner` holds it; false otherwise.
    fn unlock(&self, name: RStr<'_>, owner: RStr<'_>) -> Fut<bool>;

    /// Fire and forget: delivered to the target's handlers, nothing awaited.
    fn send_task(&self, target: FfiTarget, name: RStr<'_>, payload: RVec<u8>) -> Fut<()>;
    /// Runs the task on the target members; one reply per member, a member
    /// without an answer within `timeout_ms` replies TIMED_OUT.
    fn call_task(
        &self,
        target: FfiTarget,
        name: RStr<'_>,
        payload: RVec<u8>,
        timeout_ms: u64,
    ) -> Fut<RVec<FfiTaskReply>>;

    /// Every cluster-wide setting this member knows.
    fn settings(&self) -> RVec<Tuple2<RString, RString>>;
    /// Sets a cluster-wide setting; every member (this one included) gets SETTING_CHANGED.
    fn put_setting(&self, key: RStr<'_>, value: RStr<'_>) -> Fut<()>;

    /// Named counters (messages, bytes, drops...), for status and metrics.
    #[sabi(last_prefix_field)]
    fn stats(&self) -> RVec<Tuple2<RString, u64>>;

    // ---- Appended in API 0.1.1. A plugin built against an older API has
    // none of these in its vtable: abi_stable then runs the default body
    // written here, on the host's side. Each has one, and the host asks
    // `capabilities` before calling any other. ----

    /// The optional capabilities this strategy offers ([`capability`] bits);
    /// 0 for a strategy built before API 0.1.1.
    fn capabilities(&self) -> u64 {
        0
    }
    /// The value under `key` with its version.
    fn cache_get_versioned(&self, cache: RStr<'_>, key: RSlice<'_, u8>) -> Fut<ROption<FfiVersioned>> {
        let _ = (cache, key);
        predates("cache_get_versioned")
    }
    /// Writes `value` under `key` only if the key is absent (atomic per key).
    fn cache_put_if_absent(&self, cache: RStr<'_>, key: RVec<u8>, value: RVec<u8>) -> Fut<FfiCasOutcome> {
        let _ = (cache, key, value);
        predates("cache_put_if_absent")
    }
    /// Writes `value` under `key` only if the entry there is `expected` (atomic per key).
    fn cache_replace_if(
        &self,
        cache: RStr<'_>,
        key: RVec<u8>,
        expected: FfiExpected,
        value: RVec<u8>,
    ) -> Fut<FfiCasOutcome> {
        let _ = (cache, key, expected, value);
        predates("cache_replace_if")
    }
    /// Removes `key` only if the entry there is `expected` (atomic per key).
    fn cache_remove_if(&self, cache: RStr<'_>, key: RVec<u8>, expected: FfiExpected) -> Fut<FfiCasOutcome> {
        let _ = (cache, key, expected);
        predates("cache_remove_if")
    }

    // ---- Appended in API 0.1.2 (same rule as above). ----

    /// The fencing number of the grant of lock `name` that `owner` holds
    /// now: greater than every number any earlier grant of the lock got,
    /// across senior changes and restarts of the lock's store; 0 when
    /// `owner` does not hold it. The host asks right after a grant.
    fn lock_fence(&self, name: RStr<'_>, owner: RStr<'_>) -> Fut<u64> {
        let _ = (name, owner);
        predates_in("lock_fence", "0.1.2")
    }

    // ---- Appended in API 0.1.3 (same rule as above). ----

    /// Applies `bounds` to `cache` on this member from now on, shrinking
    /// what it holds at once (evicting, expiring) when they are tighter
    /// than before. The host sends every configured cache's bounds when
    /// the strategy attaches and again on every change; the same bounds
    /// reach every member. A strategy refuses a bound it cannot keep with
    /// an error naming it (e.g. max idle on a replicated cache).
    fn cache_configure(&self, cache: RStr<'_>, bounds: FfiCacheBounds) -> Fut<()> {
        let _ = (cache, bounds);
        predates_in("cache_configure", "0.1.3")
    }
    /// Writes `value` under `key`, expiring `ttl_ms` after the write
    /// (instead of the cache's own time to live).
    fn cache_put_ttl(&self, cache: RStr<'_>, key: RVec<u8>, value: RVec<u8>, ttl_ms: u64) -> Fut<()> {
        let _ = (cache, key, value, ttl_ms);
        predates_in("cache_put_ttl", "0.1.3")
    }
    /// The value under `key` answered on the caller's thread, without a
    /// future, when this member can tell from its own memory; `RNone`
    /// sends the read to [`cache_get`](ClusterStrategy::cache_get) (also
    /// what a strategy built before API 0.1.3 answers: the default).
    fn cache_get_sync(&self, cache: RStr<'_>, key: RSlice<'_, u8>) -> ROption<RResult<ROption<RVec<u8>>, PluginError>> {
        let _ = (cache, key);
        ROption::RNone
    }
    /// This node has an entry listener on `cache` now (the host calls it
    /// when one registers, and for every listened cache when the strategy
    /// attaches): resolves once every change made after it, on any
    /// member, will be reported (a strategy that reports changes only
    /// while someone listens starts doing so here). The end of listening
    /// is not told: poll [`ClusterCallbacks::cache_listened`]. A strategy
    /// built before it reports every change anyway: the default does nothing.
    fn cache_listen(&self, cache: RStr<'_>) -> Fut<()> {
        let _ = cache;
        async_ffi::FutureExt::into_ffi(async { RResult::ROk(()) })
    }

    // ---- Appended in API 0.1.4 (same rule as above). ----

    /// When each of `keys` of `cache` expires as this member sees it, in
    /// ms since the epoch, in the order asked: the sooner of its time to
    /// live (its own, else the cache's) and its max idle time from its
    /// last use; 0 when it never expires or holds nothing. Reported with
    /// [`capability::ENTRY_TIMES`].
    fn cache_expiries(&self, cache: RStr<'_>, keys: RVec<RVec<u8>>) -> Fut<RVec<u64>> {
        let _ = (cache, keys);
        predates_in("cache_expiries", "0.1.4")
    }
    /// This member's counts for `cache` by name (`evictions`, `expiries`:
    /// entries it removed by the cache's bounds since it started); names
    /// it does not know are left out (the default, before API 0.1.4: none).
    fn cache_counts(&self, cache: RStr<'_>) -> RVec<Tuple2<RString, u64>> {
        let _ = cache;
        RVec::new()
    }
}

/// The owned form of a strategy.
pub type StrategyBox = ClusterStrategy_TO<'static, RBox<()>>;

/// What the host offers a strategy. Never blocks the calling thread.
#[sabi_trait]
pub trait ClusterCallbacks: Send + Sync + Clone {
    /// Queues an event for the host's ordered event stream.
    fn event(&self, event: FfiEvent);

    /// Runs the task handler `name` on this node for a request from `from`.
    /// The handler runs on the host's runtime; the future only waits for it.
    #[sabi(last_prefix_field)]
    fn run_task(&self, from: RStr<'_>, name: RStr<'_>, payload: RVec<u8>) -> FfiFuture<RResult<RVec<u8>, RString>>;

    // ---- Appended in API 0.1.2. A host built against an older API has
    // none of these in its vtable: abi_stable then runs the default body
    // written here, on the plugin's side. ----

    /// An entry changed (on this member or another): queued for the
    /// host's entry listeners, never blocks, never drops a strategy. A
    /// host older than 0.1.2 has no listeners for it: the default drops it.
    fn cache_event(&self, event: FfiCacheEvent) {
        let _ = event;
    }

    /// Whether this node has an entry listener on `cache` now: a strategy
    /// that reports changes only to its own host may skip building them
    /// while it has none. An older host has no listeners: the default
    /// answers false.
    fn cache_listened(&self, cache: RStr<'_>) -> bool {
        let _ = cache;
        false
    }
}

/// The shared form of the host's callbacks.
pub type ClusterCallbacksBox = ClusterCallbacks_TO<'static, RArc<()>>;

// ---- conversions ----

impl From<Member> for FfiMember {
    fn from(m: Member) -> Self {
        FfiMember {
            id: m.id.into(),
            address: m.address.into(),
            started_at_ms: m.started_at_ms,
            plugin_version: m.plugin_version.into(),
        }
    }
}

impl From<FfiMember> for Member {
    fn from(m: FfiMember) -> Self {
        Member {
            id: m.id.into(),
            address: m.address.into(),
            started_at_ms: m.started_at_ms,
            plugin_version: m.plugin_version.into(),
        }
    }
}

impl From<Entry> for FfiEntry {
    fn from(e: Entry) -> Self {
        FfiEntry { key: e.key.into(), value: e.value.into(), version: e.version }
    }
}

impl From<FfiEntry> for Entry {
    fn from(e: FfiEntry) -> Self {
        Entry { key: e.key.into(), value: e.value.into(), version: e.version }
    }
}

impl From<StrategyEvent> for FfiEvent {
    fn from(e: StrategyEvent) -> Self {
        let (kind, subject, value) = match e {
            StrategyEvent::Joined { member } => (event_kind::JOINED, member, String::new()),
            StrategyEvent::Left { member } => (event_kind::LEFT, member, String::new()),
            StrategyEvent::SeniorChanged { member } => (event_kind::SENIOR_CHANGED, member, String::new()),
            StrategyEvent::SettingChanged { key, value } => (event_kind::SETTING_CHANGED, key, value),
        };
        FfiEvent { kind, subject: subject.into(), value: value.into() }
    }
}

impl FfiEvent {
    /// The event, or `None` for a kind this version does not know.
    pub fn decode(self) -> Option<StrategyEvent> {
        let subject: String = self.subject.into();
        Some(match self.kind {
            event_kind::JOINED => StrategyEvent::Joined { member: subject },
            event_kind::LEFT => StrategyEvent::Left { member: subject },
            event_kind::SENIOR_CHANGED => StrategyEvent::SeniorChanged { member: subject },
            event_kind::SETTING_CHANGED => StrategyEvent::SettingChanged { key: subject, value: self.value.into() },
            _ => return None,
        })
    }
}

impl From<TaskTarget> for FfiTarget {
    fn from(t: TaskTarget) -> Self {
        let (kind, member) = match t {
            TaskTarget::All => (target_kind::ALL, String::new()),
            TaskTarget::Others => (target_kind::OTHERS, String::new()),
            TaskTarget::Member(m) => (target_kind::MEMBER, m),
            TaskTarget::Senior => (target_kind::SENIOR, String::new()),
        };
        FfiTarget { kind, member: member.into() }
    }
}

impl FfiTarget {
    /// The target, or `None` for a kind this version does not know.
    pub fn decode(self) -> Option<TaskTarget> {
        Some(match self.kind {
            target_kind::ALL => TaskTarget::All,
            target_kind::OTHERS => TaskTarget::Others,
            target_kind::MEMBER => TaskTarget::Member(self.member.into()),
            target_kind::SENIOR => TaskTarget::Senior,
            _ => return None,
        })
    }
}

impl From<TaskReply> for FfiTaskReply {
    fn from(r: TaskReply) -> Self {
        let (outcome, value, error) = match r.outcome {
            TaskOutcome::Value(v) => (outcome_kind::VALUE, v, String::new()),
            TaskOutcome::Error(e) => (outcome_kind::ERROR, Vec::new(), e),
            TaskOutcome::TimedOut => (outcome_kind::TIMED_OUT, Vec::new(), String::new()),
        };
        FfiTaskReply { member: r.member.into(), outcome, value: value.into(), error: error.into() }
    }
}

impl From<FfiTaskReply> for TaskReply {
    fn from(r: FfiTaskReply) -> Self {
        let outcome = match r.outcome {
            outcome_kind::VALUE => TaskOutcome::Value(r.value.into()),
            outcome_kind::ERROR => TaskOutcome::Error(r.error.into()),
            outcome_kind::TIMED_OUT => TaskOutcome::TimedOut,
            other => TaskOutcome::Error(format!("the strategy sent an unknown task outcome ({other})")),
        };
        TaskReply { member: r.member.into(), outcome }
    }
}

impl From<CacheEvent> for FfiCacheEvent {
    fn from(e: CacheEvent) -> Self {
        FfiCacheEvent {
            kind: e.kind.code(),
            cache: e.cache.into(),
            key: e.key.into(),
            value: e.value.map(RVec::from).into(),
            version: e.version,
            origin: e.origin.into(),
        }
    }
}

impl FfiCacheEvent {
    /// The event, or `None` for a kind this version does not know.
    pub fn decode(self) -> Option<CacheEvent> {
        Some(CacheEvent {
            kind: EntryEventKind::from_code(self.kind)?,
            cache: self.cache.into(),
            key: self.key.into(),
            value: self.value.into_option().map(Into::into),
            version: self.version,
            origin: self.origin.into(),
        })
    }
}

impl From<Versioned> for FfiVersioned {
    fn from(v: Versioned) -> Self {
        FfiVersioned { value: v.value.into(), version: v.version }
    }
}

impl From<FfiVersioned> for Versioned {
    fn from(v: FfiVersioned) -> Self {
        Versioned { value: v.value.into(), version: v.version }
    }
}

impl From<Expected> for FfiExpected {
    fn from(e: Expected) -> Self {
        match e {
            Expected::Value(value) => FfiExpected { kind: expected_kind::VALUE, value: value.into(), version: 0 },
            Expected::Version(version) => FfiExpected { kind: expected_kind::VERSION, value: RVec::new(), version },
        }
    }
}

impl FfiExpected {
    /// The expectation, or `None` for a kind this version does not know.
    pub fn decode(self) -> Option<Expected> {
        match self.kind {
            expected_kind::VALUE => Some(Expected::Value(self.value.into())),
            expected_kind::VERSION => Some(Expected::Version(self.version)),
            _ => None,
        }
    }
}

impl From<CasOutcome> for FfiCasOutcome {
    fn from(o: CasOutcome) -> Self {
        FfiCasOutcome { applied: o.applied, current: o.current.map(Into::into).into() }
    }
}

impl From<FfiCasOutcome> for CasOutcome {
    fn from(o: FfiCasOutcome) -> Self {
        CasOutcome { applied: o.applied, current: o.current.into_option().map(Into::into) }
    }
}

/// The version a write stamps on a key that held `previous`: the cluster
/// time `now`, or one more than the previous version when `now` is not
/// greater (two writes in one millisecond, or a clock behind the writer
/// before). The rule every strategy follows (see [`Versioned`]).
pub fn next_version(previous: Option<u64>, now: u64) -> u64 {
    match previous {
        Some(previous) if previous >= now => previous.saturating_add(1),
        _ => now,
    }
}

impl From<CacheSize> for FfiCacheSize {
    fn from(s: CacheSize) -> Self {
        FfiCacheSize { entries: s.entries, bytes: s.bytes }
    }
}

impl From<FfiCacheSize> for CacheSize {
    fn from(s: FfiCacheSize) -> Self {
        CacheSize { entries: s.entries, bytes: s.bytes }
    }
}

/// `d` in whole milliseconds, saturating: a time to live as the contract
/// carries it (`cache_put_ttl`).
pub fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Whether a deadline `at` (ms since the epoch) has passed at `now`: once
/// `now` is past it, never in its own millisecond. Clock readings drop
/// the fraction of a millisecond, so an entry written with a time to live
/// `t` lives at least `t` (Redis's rule for its keys, `now > when`). The
/// rule every strategy follows for expiry.
pub fn is_past(at: u64, now: u64) -> bool {
    at < now
}

/// Milliseconds since the Unix epoch, from the system clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
