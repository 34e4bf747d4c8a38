//! Atomic cache operations, decided by the senior member: every
//! put-if-absent, replace-if and remove-if goes to the senior, which checks
//! its replica and, if the condition holds, writes and replicates the entry
//! to every member before it answers and before it decides the next one.
//! docs/gossip.md ("Atomic operations") states what holds.

use std::sync::Arc;
use std::time::Instant;

use clusterhost_plugin_api::cluster::{CasOutcome, Expected, Versioned};
use clusterhost_plugin_api::PluginResult;
use serde::{Deserialize, Serialize};

use crate::core::Core;
use crate::wire::Msg;

/// The first wire version with [`Msg::Cas`].
pub(crate) const CAS_WIRE: (u16, u16) = (1, 2);

/// What the senior answers a member that is no longer the senior: the
/// requester asks the new one.
const NOT_SENIOR: &str = "this member is no longer the senior";

/// One atomic operation, as sent to the senior.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum CasOp {
    PutIfAbsent { value: Vec<u8> },
    ReplaceIf { expected: WireExpected, value: Vec<u8> },
    RemoveIf { expected: WireExpected },
}

/// [`Expected`] on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WireExpected {
    Value(Vec<u8>),
    Version(u64),
}

/// [`CasOutcome`] on the wire: whether it applied, and the entry after
/// (value, version).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireCasOutcome {
    pub applied: bool,
    pub current: Option<(Vec<u8>, u64)>,
}

impl From<Expected> for WireExpected {
    fn from(e: Expected) -> Self {
        match e {
            Expected::Value(v) => WireExpected::Value(v),
            Expected::Version(v) => WireExpected::Version(v),
        }
    }
}

impl From<WireCasOutcome> for CasOutcome {
    fn from(o: WireCasOutcome) -> Self {
        CasOutcome { applied: o.applied, current: o.current.map(|(value, version)| Versioned { value, version }) }
    }
}

/// Gates the senior takes its decisions under, by key: one decision at a
/// time per key (the next sees the last one's write, which is on every
/// member before the gate opens), while keys on other gates proceed at
/// once. Async mutexes: a decision awaits its replication.
pub(crate) struct Decisions {
    gates: [tokio::sync::Mutex<()>; GATES],
}

/// How many gates the keys are spread over (a fixed array: nothing to
/// clean up, and two keys on one gate only wait for each other).
const GATES: usize = 64;

impl Default for Decisions {
    fn default() -> Self {
        Decisions { gates: std::array::from_fn(|_| tokio::sync::Mutex::new(())) }
    }
}

impl Decisions {
    /// The gate of `key` in `cache`.
    fn gate(&self, cache: &str, key: &[u8]) -> &tokio::sync::Mutex<()> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (cache, key).hash(&mut hasher);
        &self.gates[hasher.finish() as usize % GATES]
    }
}

impl Core {
    /// On the senior: checks `op` against the entry here and applies it.
    pub(crate) async fn decide(&self, cache: &str, key: Vec<u8>, op: CasOp) -> Result<WireCasOutcome, String> {
        let _gate = self.decisions.gate(cache, &key).lock().await;
        if self.view.senior().as_deref() != Some(self.member.as_str()) {
            return Err(NOT_SENIOR.into());
        }
        let current = self.replica.store.get_versioned(cache, &key).map(|(value, version)| (value, version.hlc));
        let matches = |expected: &WireExpected| match (expected, &current) {
            (WireExpected::Value(v), Some((value, _))) => v == value,
            (WireExpected::Version(v), Some((_, version))) => v == version,
            (_, None) => false,
        };
        let value = match op {
            CasOp::PutIfAbsent { value } if current.is_none() => Some(value),
            CasOp::ReplaceIf { expected, value } if matches(&expected) => Some(value),
            CasOp::RemoveIf { expected } if matches(&expected) => None,
            _ => return Ok(WireCasOutcome { applied: false, current }),
        };
        let entry = self.replica.entry(cache, key, value.clone());
        let version = entry.version.hlc;
        self.replicate(vec![entry]).await.map_err(|e| e.to_string())?;
        Ok(WireCasOutcome { applied: true, current: value.map(|v| (v, version)) })
    }

    /// From any member: has the senior decide `op`, asking again while the
    /// senior changes (for up to the operation timeout). Any other failure
    /// is returned as it is: the operation may or may not have applied.
    pub(crate) async fn atomic(self: Arc<Self>, cache: String, key: Vec<u8>, op: CasOp) -> PluginResult<CasOutcome> {
        let deadline = Instant::now() + self.config.operation_timeout();
        loop {
            if !self.is_joined() {
                return Err("this member is not in the cluster: atomic operations need its senior".into());
            }
            let answer = match self.view.senior() {
                Some(s) if s == self.member => self.decide(&cache, key.clone(), op.clone()).await,
                Some(s) => self.ask_to_decide(&s, &cache, &key, &op).await?,
                None => Err("no senior yet".into()),
            };
            match answer {
                Ok(outcome) => return Ok(outcome.into()),
                Err(e) if e == NOT_SENIOR || e == "no senior yet" => {
                    if Instant::now() >= deadline {
                        return Err(format!("atomic operation on cache {cache}: no senior decided it in time ({e}); nothing was written").into());
                    }
                    tokio::time::sleep(self.config.gossip_interval()).await;
                }
                Err(e) => return Err(format!("atomic operation on cache {cache} failed at the senior: {e}; it may or may not have applied (read the key to see)").into()),
            }
        }
    }

    /// Sends `op` to `senior`; the outer error is a transport failure (the
    /// senior may have decided it), the inner one the senior's answer.
    async fn ask_to_decide(
        &self,
        senior: &str,
        cache: &str,
        key: &[u8],
        op: &CasOp,
    ) -> PluginResult<Result<WireCasOutcome, String>> {
        let Some(addr) = self.addr_of(senior) else { return Ok(Err("no senior yet".into())) };
        if self.view.wire_of(senior).is_some_and(|wire| wire < CAS_WIRE) {
            return Err(format!(
                "the senior {senior} runs a gossip build without atomic operations (wire before 1.2); upgrade every member"
            )
            .into());
        }
        let req = self.net.next_req();
        let msg = Msg::Cas { req, cache: cache.to_string(), key: key.to_vec(), op: op.clone() };
        match self.net.request(senior, addr, msg, req, self.config.operation_timeout()).await {
            Ok(Msg::CasReply { outcome, .. }) => Ok(outcome),
            Ok(other) => Err(format!("the senior {senior} answered an atomic operation with {other:?}").into()),
            Err(e) => Err(format!(
                "atomic operation on cache {cache}: the senior {senior} did not answer ({e}); it may or may not have applied"
            )
            .into()),
        }
    }
}
