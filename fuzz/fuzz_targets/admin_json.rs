//! The bodies the admin API reads, without the HTTP server:
//!
//! - 0: `PUT /api/properties`: the body must be UTF-8, then is validated as the
//!   properties file it replaces (`Properties::parse`) before anything is written;
//! - 1: `PUT /api/caches/{cache}/{key}`: the body must be UTF-8, is stored as a
//!   postcard `String` (what `cache::<String, String>` does), read back and
//!   answered as JSON;
//! - 2: a member's answer to the node-detail task: JSON into `NodeDetail`, which
//!   `GET /api/cluster` and `GET /api/node?member=` deserialize from every member;
//!   a detail that reads must survive its own JSON;
//! - 3: a stored cache value as `GET /api/caches/...` decodes it (postcard `String`).
#![no_main]

use std::path::Path;

use clusterhost::admin::contract::NodeDetail;
use clusterhost::properties::Properties;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else { return };
    match mode % 4 {
        0 => {
            let Ok(text) = std::str::from_utf8(body) else { return };
            let _ = Properties::parse(Path::new("conf/clusterhost.properties"), text.as_bytes());
        }
        1 => {
            let Ok(value) = String::from_utf8(body.to_vec()) else { return };
            let stored = postcard::to_allocvec(&value).expect("a String always encodes");
            let read: String = postcard::from_bytes(&stored).expect("a stored String reads back");
            assert_eq!(read, value);
            let answer = json!({ "cache": "c", "key": "k", "value": read }).to_string();
            let parsed: Value = serde_json::from_str(&answer).expect("the answer is JSON");
            assert_eq!(parsed["value"].as_str(), Some(value.as_str()));
        }
        2 => {
            if let Ok(detail) = serde_json::from_slice::<NodeDetail>(body) {
                let json = serde_json::to_vec(&detail).expect("a detail always encodes");
                let again: NodeDetail = serde_json::from_slice(&json).expect("its JSON reads back");
                assert_eq!(again, detail);
            }
        }
        _ => {
            if let Ok(value) = postcard::from_bytes::<String>(body) {
                let _ = json!({ "value": value }).to_string();
            }
        }
    }
});
