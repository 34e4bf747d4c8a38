//! The data plane's messages (postcard-encoded, then sealed, one per
//! length-delimited frame) and the wire-protocol version they belong to.

use serde::{Deserialize, Serialize};

use crate::atomic::{CasOp, WireCasOutcome};
use crate::store::{legacy, WireEntry};

/// What this build speaks when its manifest does not say (the manifest's
/// `wire_protocol` is what a member announces; a release tool may restamp it).
pub const WIRE_MAJOR: u16 = 1;
/// Minor 1 added paged state transfer (`StatePageRequest` / `StatePage`);
/// a member asks a peer of minor 0 with the one-frame `StateRequest`.
/// Minor 2 added atomic operations (`Cas` / `CasReply`), sent only to a
/// senior of minor 2 or later.
/// Minor 3 added entries with a deadline (bounded caches: `TimedReplicate`,
/// `TimedStatePageRequest` / `TimedStatePage`), sent only to members of
/// minor 3 or later; the others get the frames they know, without deadlines.
pub const WIRE_MINOR: u16 = 3;

/// The first wire version whose entries carry their deadline.
pub const TIMED_WIRE: (u16, u16) = (1, 3);

/// A wire-protocol version; peers talk when the majors match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wire {
    /// Members of different majors cannot talk.
    pub major: u16,
    /// Added messages; a member talks to an older minor in what it knows.
    pub minor: u16,
}

impl Default for Wire {
    fn default() -> Self {
        Wire { major: WIRE_MAJOR, minor: WIRE_MINOR }
    }
}

impl std::fmt::Display for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A data-plane message. New variants go at the end only: postcard
/// numbers them in order, and an older member must still read the others.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Msg {
    /// A member leaves the cluster (sent just before it stops serving);
    /// the receiver drops it from its view at once, before gossip tells.
    Leaving {
        member: String,
        generation: u64,
        /// The join it ends (a later join is not affected).
        epoch: u64,
    },
    /// First frame of a connection.
    Hello { cluster: String, member: String, wire_major: u16, wire_minor: u16 },
    /// The answer to an accepted `Hello`.
    Welcome { member: String },
    /// The connection is refused; the reason names both sides.
    Refused { reason: String },
    /// Writes to apply; answered by `Ack`. (Entries in the wire 1.2 form,
    /// without deadlines, as in `State` and `StatePage`: [`legacy`].)
    Replicate {
        req: u64,
        #[serde(with = "legacy")]
        entries: Vec<WireEntry>,
    },
    /// `Replicate`'s entries are applied.
    Ack { req: u64 },
    /// Asks for every entry held; answered by `State`.
    StateRequest { req: u64 },
    /// Every entry held (tombstones included).
    State {
        req: u64,
        #[serde(with = "legacy")]
        entries: Vec<WireEntry>,
    },
    /// To the senior: lock `name` for `owner` (held by `member`), waiting
    /// up to `wait_ms` for it (2 s when None; a requester that waits longer
    /// asks again).
    Lock { req: u64, name: String, owner: String, member: String, wait_ms: Option<u64> },
    /// Whether the lock was granted within the wait; `error` when the
    /// receiver could not decide (it is no longer the senior, say).
    LockReply { req: u64, granted: bool, error: Option<String> },
    /// To the senior: release `name` if `owner` holds it.
    Unlock { req: u64, name: String, owner: String },
    /// Whether `Unlock` released the lock.
    UnlockReply { req: u64, released: bool },
    /// Runs a task; `TaskReply` comes back unless `fire_and_forget`.
    Task { req: u64, name: String, payload: Vec<u8>, from: String, fire_and_forget: bool },
    /// What the task returned, or its error.
    TaskReply { req: u64, outcome: Result<Vec<u8>, String> },
    // Wire 1.1 (appended: postcard numbers variants in order, so the ones
    // above keep their encoding and a 1.0 member still reads them).
    /// Asks for one page of the entries held: those after `after` (cache,
    /// key) in order, up to about `max_bytes`; answered by `StatePage`.
    StatePageRequest { req: u64, after: Option<(String, Vec<u8>)>, max_bytes: u64 },
    /// One page; `more` when entries after its last one remain.
    StatePage {
        req: u64,
        #[serde(with = "legacy")]
        entries: Vec<WireEntry>,
        more: bool,
    },
    // Wire 1.2.
    /// To the senior: decide one atomic operation on `key` of `cache`.
    Cas { req: u64, cache: String, key: Vec<u8>, op: CasOp },
    /// The decision, or why the receiver could not decide (not the senior).
    CasReply { req: u64, outcome: Result<WireCasOutcome, String> },
    // Wire 1.3: the same frames with each entry's deadline (bounded caches).
    /// `Replicate`, with deadlines; answered by `Ack`.
    TimedReplicate { req: u64, entries: Vec<WireEntry> },
    /// `StatePageRequest`, answered by `TimedStatePage`.
    TimedStatePageRequest { req: u64, after: Option<(String, Vec<u8>)>, max_bytes: u64 },
    /// `StatePage`, with deadlines.
    TimedStatePage { req: u64, entries: Vec<WireEntry>, more: bool },
}

impl Msg {
    /// The request id of a reply.
    pub fn reply_to(&self) -> Option<u64> {
        match self {
            Msg::Ack { req }
            | Msg::State { req, .. }
            | Msg::StatePage { req, .. }
            | Msg::TimedStatePage { req, .. }
            | Msg::LockReply { req, .. }
            | Msg::UnlockReply { req, .. }
            | Msg::TaskReply { req, .. }
            | Msg::CasReply { req, .. } => Some(*req),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::Msg;
    use crate::store::{Version, WireEntry};

    /// What a wire 1.2 build knows: its entry and its first frames, in order.
    mod v12 {
        use serde::{Deserialize, Serialize};

        use crate::store::Version;

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub struct WireEntry {
            pub cache: String,
            pub key: Vec<u8>,
            pub value: Option<Vec<u8>>,
            pub version: Version,
        }

        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        pub enum Msg {
            Leaving { member: String, generation: u64, epoch: u64 },
            Hello { cluster: String, member: String, wire_major: u16, wire_minor: u16 },
            Welcome { member: String },
            Refused { reason: String },
            Replicate { req: u64, entries: Vec<WireEntry> },
            Ack { req: u64 },
            StateRequest { req: u64 },
            State { req: u64, entries: Vec<WireEntry> },
        }
    }

    fn roundtrip<A: Serialize, B: for<'de> Deserialize<'de>>(a: &A) -> B {
        postcard::from_bytes(&postcard::to_allocvec(a).expect("encodes")).expect("decodes")
    }

    #[test]
    fn the_frames_a_wire_1_2_member_reads_are_byte_for_byte_what_it_sends_and_carry_no_deadline() {
        let version = Version { hlc: 77 << 16, member: 9 };
        let old = v12::WireEntry { cache: "c".into(), key: b"k".to_vec(), value: Some(b"v".to_vec()), version };
        let gone = v12::WireEntry { value: None, ..old.clone() };
        let new =
            WireEntry { cache: "c".into(), key: b"k".to_vec(), value: Some(b"v".to_vec()), version, deadline: 1234 };
        let sent = Msg::Replicate { req: 5, entries: vec![new.clone(), WireEntry { value: None, ..new.clone() }] };
        let read: v12::Msg = roundtrip(&sent);
        assert_eq!(read, v12::Msg::Replicate { req: 5, entries: vec![old.clone(), gone.clone()] });
        assert_eq!(
            postcard::to_allocvec(&sent).unwrap(),
            postcard::to_allocvec(&v12::Msg::Replicate { req: 5, entries: vec![old.clone(), gone] }).unwrap()
        );
        let from_old: Msg = roundtrip(&v12::Msg::State { req: 6, entries: vec![old] });
        let Msg::State { req: 6, entries } = from_old else { panic!("{from_old:?}") };
        assert_eq!(entries, vec![WireEntry { deadline: 0, ..new.clone() }]);
        // The timed frame keeps the deadline.
        let timed: Msg = roundtrip(&Msg::TimedReplicate { req: 7, entries: vec![new.clone()] });
        assert!(matches!(timed, Msg::TimedReplicate { req: 7, entries } if entries == vec![new]));
    }
}
