//! What can go wrong between this member and the shared Redis, each as a
//! sentence saying what failed, where, and what to check. The host sees
//! these as text: `PluginResult` boxes them at the `Strategy` edge.

use std::time::Duration;

/// An error of the redis strategy.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No command connection: never connected, or dropped for a reconnect.
    #[error("not connected to Redis ({urls}); check that the server runs and the urls in conf/redis.toml")]
    NotConnected { urls: String },

    /// Connecting the command connection failed; `cause` says how.
    #[error(
        "could not reach Redis ({mode} mode, {urls}): {cause}; check that the server runs and the urls in conf/redis.toml"
    )]
    Unreachable { mode: &'static str, urls: String, cause: Box<Error> },

    /// A command, pipeline or script was sent and Redis (or the link) failed it.
    #[error("Redis ({urls}) failed: {source}")]
    Command { urls: String, source: redis::RedisError },

    /// Cache calls fail fast while this member is out of the cluster.
    #[error("this member is not in the cluster (Redis at {urls} is unreachable or clustering stopped)")]
    NotInCluster { urls: String },

    /// Another live member holds this member's key.
    #[error(
        "a member named {member} is already in the cluster (Redis key {key} is live); give each node its own node.name"
    )]
    NamesakeLive { member: String, key: String },

    /// A stored cache value without the version this strategy writes.
    #[error(transparent)]
    Unversioned(#[from] UnversionedValue),

    /// This member's record could not be written as JSON.
    #[error("could not encode this member's record for Redis: {0}")]
    EncodeRecord(#[source] serde_json::Error),

    /// A task message could not be written for the wire.
    #[error("could not encode a task message: {0}")]
    EncodeTask(#[source] postcard::Error),

    /// A script's answer was not what this plugin's scripts give.
    #[error("Redis ({urls}) answered a cache script with something this plugin cannot read ({detail}); is another program writing under this key_prefix?")]
    BadReply { urls: String, detail: String },

    /// Cluster mode: the cache's name keeps its bookkeeping keys off its hash's slot.
    #[error(
        "cache {cache} cannot keep {what} on Redis Cluster: its name has a '}}' outside a hash tag, so no other key can share its hash's slot; rename the cache so that it has no '}}' outside a {{tag}}"
    )]
    NoRoomForBooks { cache: String, what: &'static str },

    /// This member's `partitions` differs from the one the cluster recorded.
    #[error(
        "this member has partitions = {mine} in conf/redis.toml, the cluster under key prefix {prefix:?} uses {cluster} (recorded in {key} by its first member): give every member the same value (to change the cluster's: stop every member and delete {key}; caches already spread keep their layout)"
    )]
    PartitionsDiffer { mine: u32, cluster: String, prefix: String, key: String },

    /// The pub/sub connection is down, so this member cannot hear entry events yet.
    #[error("the pub/sub connection to Redis ({urls}) is down: entry events reach this member's listeners once it is back (it reconnects by itself)")]
    NoPubSub { urls: String },

    /// `cluster_strategy` was asked of a plugin that has not started.
    #[error("redis has not started")]
    NotStarted,

    // The causes below appear inside `Unreachable`, or alone in the
    // pub/sub connection's log line.
    /// The configuration lists no URL (validation refuses that).
    #[error("no Redis URL is configured; list one in urls in conf/redis.toml")]
    NoUrls,

    /// A cluster node took the connection but did not answer PING.
    #[error("{url} does not answer")]
    NoAnswer { url: String },

    /// A client for one URL could not be made (URL, TLS certificates).
    #[error("{url}: {source}")]
    Client { url: String, source: redis::RedisError },

    /// The Sentinel client could not be made from the sentinels' URLs.
    #[error("the sentinels {urls:?}: {source}")]
    Sentinels { urls: Vec<String>, source: redis::RedisError },

    /// No sentinel named a master of that name.
    #[error("no sentinel of {urls:?} named a master {master:?}: {source}")]
    NoMaster { urls: Vec<String>, master: String, source: redis::RedisError },

    /// Opening a connection failed.
    #[error("{0}")]
    Connect(#[source] redis::RedisError),

    /// Connecting took longer than its bound.
    #[error("no answer within {0:?}")]
    ConnectTimedOut(Duration),

    /// The pub/sub connection took longer than `connect_ms` to open.
    #[error("the pub/sub connection did not open within {0:?}")]
    PubSubTimedOut(Duration),
}

/// A stored cache value without its 16-hex-digit version prefix.
#[doc(hidden)] // pub for the fuzz targets (fuzz/), which compare results
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a cache value in Redis has no version prefix: it was not written by this strategy; give each cluster its own key_prefix in conf/redis.toml"
)]
pub struct UnversionedValue;
