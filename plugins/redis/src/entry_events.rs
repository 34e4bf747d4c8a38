//! Entry events over Redis: every script that writes an entry also
//! PUBLISHes the change on the cluster's entries channel (`P:entries`), in
//! the same script (`tell` in [`scripts::BASE`](crate::scripts::BASE)), so a
//! key's changes are published in the order Redis applied them, but only
//! while some member listens to the cache (`listening`: crate::listening);
//! a member subscribes while its host listens to any cache and tells its host. A plain
//! PUBLISH (not a sharded SPUBLISH): on Redis Cluster it reaches every
//! node, so one subscription anywhere hears every cache, and a cache's
//! writes all come from its hash's one master, in order.
//!
//! A message: `e1`, the kind (`a` added, `u` updated, `r` removed, `x`
//! expired, `v` evicted), `1` if
//! the value is carried, the version (16 hex digits), then origin, cache
//! and key, each as a length in 8 hex digits and the bytes, then the value.
//! A value over [`VALUE_MAX`] bytes is not carried (the event has none).
//! A message from the wire is checked whole ([`MESSAGE_MAX`], every length
//! within what is left) before anything of it is used.

use clusterhost_plugin_api::cluster::{CacheEvent, EntryEventKind};

/// Values up to this many bytes travel in the event.
pub const VALUE_MAX: usize = 64 * 1024;

/// The longest message a member takes: a carried value, and 192 KiB for
/// the origin, cache name and key. A longer one is dropped and counted.
pub const MESSAGE_MAX: usize = VALUE_MAX + 192 * 1024;

/// A message from the entries channel, checked: `None` for anything that
/// is not a whole, well-formed event within [`MESSAGE_MAX`].
#[doc(hidden)] // pub for the fuzz target (fuzz/)
pub fn decode(payload: &[u8]) -> Option<CacheEvent> {
    if payload.len() > MESSAGE_MAX {
        return None;
    }
    let rest = payload.strip_prefix(b"e1")?;
    let (&kind, rest) = rest.split_first()?;
    let kind = match kind {
        b'a' => EntryEventKind::Added,
        b'u' => EntryEventKind::Updated,
        b'r' => EntryEventKind::Removed,
        b'x' => EntryEventKind::Expired,
        b'v' => EntryEventKind::Evicted,
        _ => return None,
    };
    let (&carried, rest) = rest.split_first()?;
    let (version, rest) = hex(rest, 16)?;
    let (origin, rest) = field(rest)?;
    let (cache, rest) = field(rest)?;
    let (key, rest) = field(rest)?;
    let value = match carried {
        b'1' if matches!(kind, EntryEventKind::Added | EntryEventKind::Updated) => Some(rest.to_vec()),
        b'0' if rest.is_empty() => None,
        _ => return None,
    };
    Some(CacheEvent {
        kind,
        cache: String::from_utf8(cache.to_vec()).ok()?,
        key: key.to_vec(),
        value,
        version,
        origin: String::from_utf8(origin.to_vec()).ok()?,
    })
}

/// `digits` hex digits at the start of `bytes`, and what follows.
fn hex(bytes: &[u8], digits: usize) -> Option<(u64, &[u8])> {
    if bytes.len() < digits {
        return None;
    }
    let (number, rest) = bytes.split_at(digits);
    let number = std::str::from_utf8(number).ok()?;
    Some((u64::from_str_radix(number, 16).ok()?, rest))
}

/// A length (8 hex digits) and that many bytes, and what follows.
fn field(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = hex(bytes, 8)?;
    let len = usize::try_from(len).ok().filter(|len| *len <= rest.len())?;
    Some(rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u8, carried: u8, origin: &str, cache: &str, key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut out = format!("e1{}{}{:016x}", kind as char, carried as char, 42).into_bytes();
        for part in [origin.as_bytes(), cache.as_bytes(), key] {
            out.extend(format!("{:08x}", part.len()).into_bytes());
            out.extend_from_slice(part);
        }
        out.extend_from_slice(value);
        out
    }

    #[test]
    fn a_well_formed_message_decodes_and_anything_else_is_refused() {
        let event = decode(&message(b'u', b'1', "a", "c", b"k\0\xff", b"v")).expect("decodes");
        assert_eq!(
            event,
            CacheEvent {
                kind: EntryEventKind::Updated,
                cache: "c".into(),
                key: b"k\0\xff".to_vec(),
                value: Some(b"v".to_vec()),
                version: 42,
                origin: "a".into()
            }
        );
        assert_eq!(decode(&message(b'r', b'0', "a", "c", b"k", b"")).map(|e| e.value), Some(None));
        assert_eq!(decode(&message(b'x', b'0', "a", "c", b"k", b"")).map(|e| e.kind), Some(EntryEventKind::Expired));
        assert_eq!(decode(&message(b'v', b'0', "a", "c", b"k", b"")).map(|e| e.kind), Some(EntryEventKind::Evicted));
        let refused = [
            message(b'x', b'1', "a", "c", b"k", b"v"),
            message(b'r', b'1', "a", "c", b"k", b"v"),
            message(b'x', b'1', "a", "c", b"k", b"v"),
            message(b'a', b'0', "a", "c", b"k", b"trailing"),
            message(b'a', b'1', "\u{0}", "c", b"k", b"v")[..20].to_vec(),
            b"e1a1".to_vec(),
            b"unlocked\n".to_vec(),
            Vec::new(),
        ];
        for bad in refused {
            assert_eq!(decode(&bad), None, "{:?}", String::from_utf8_lossy(&bad));
        }
        // A length beyond the message, and a message beyond the bound.
        let mut lying = message(b'a', b'1', "a", "c", b"k", b"v");
        lying[20..28].copy_from_slice(b"ffffffff");
        assert_eq!(decode(&lying), None);
        assert_eq!(decode(&message(b'a', b'1', "a", "c", b"k", &vec![0; MESSAGE_MAX])), None);
    }
}
