//! What the redis strategy reads back from Redis: cache values (a 16-digit
//! hex version, then the value), member records (JSON) and the task/reply
//! channel messages (postcard), and entry event messages (`P:entries`).
//!
//! First byte picks the mode: 0, the rest is a stored cache value
//! (`decode`); 1, the rest is a version (8 bytes, little-endian) and a value
//! that must survive `encode` then `decode`; 2, the rest is a member key's
//! JSON record; 3, the rest is a pub/sub task or reply; 4, the rest is an
//! entry event message (`entry_events::decode`: never a panic, and what it
//! takes fits in the message).
#![no_main]

use libfuzzer_sys::fuzz_target;
use redis_strategy::{decode, encode, Record, Wire};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 5 {
        0 => {
            if let Ok((version, value)) = decode(rest.to_vec()) {
                assert_eq!(value, rest[16..]);
                let prefix = &rest[..16];
                if prefix.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)) {
                    assert_eq!(encode(version, &value), rest, "a canonical value re-encodes to itself");
                }
            }
        }
        1 => {
            let Some((version, value)) = rest.split_first_chunk::<8>() else { return };
            let version = u64::from_le_bytes(*version);
            assert_eq!(decode(encode(version, value)), Ok((version, value.to_vec())));
        }
        2 => {
            let Ok(text) = std::str::from_utf8(rest) else { return };
            if let Ok(record) = serde_json::from_str::<Record>(text) {
                let json = serde_json::to_string(&record).expect("a record always encodes");
                assert_eq!(serde_json::from_str::<Record>(&json).expect("its JSON reads back"), record);
            }
        }
        4 => {
            if let Some(event) = redis_strategy::entry_events::decode(rest) {
                let carried = event.key.len() + event.cache.len() + event.origin.len();
                assert!(carried + event.value.map_or(0, |v| v.len()) <= rest.len());
            }
        }
        _ => {
            if let Ok(msg) = postcard::from_bytes::<Wire>(rest) {
                let encoded = postcard::to_allocvec(&msg).expect("a message always encodes");
                let again: Wire = postcard::from_bytes(&encoded).expect("a re-encoded message decodes");
                assert_eq!(postcard::to_allocvec(&again).expect("a message always encodes"), encoded);
            }
        }
    }
});
