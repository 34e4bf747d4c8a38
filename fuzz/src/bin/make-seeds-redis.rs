//! Writes the redis_codec seeds: `make-seeds-redis DIR` (a binary of its own:
//! the gossip and redis plugins export the same symbols, so one binary cannot
//! link both; see make-seeds.rs).

use std::path::Path;

use redis_strategy::{encode, Record, Wire};

const RECORD: &str = r#"{"instance":12345,"started_at_ms":1700000000000,"version":"0.1.0","address":"10.0.0.2"}"#;

fn write(dir: &Path, target: &str, name: &str, mode: Option<u8>, body: &[u8]) {
    let dir = dir.join(target);
    std::fs::create_dir_all(&dir).expect("corpus directory");
    let mut bytes = mode.map(|m| vec![m]).unwrap_or_default();
    bytes.extend_from_slice(body);
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("seed file");
}

fn main() {
    let dir = std::env::args().nth(1).expect("usage: make-seeds-redis CORPUS_DIR");
    let dir = Path::new(&dir);

    // redis: 0 = stored value, 1 = version + value, 2 = member record, 3 = pub/sub message.
    write(dir, "redis_codec", "value", Some(0), &encode(1_700_000_000_000, b"hello"));
    write(dir, "redis_codec", "value-empty", Some(0), &encode(0, b""));
    let mut versioned = 1_700_000_000_000u64.to_le_bytes().to_vec();
    versioned.extend_from_slice(b"value");
    write(dir, "redis_codec", "round-trip", Some(1), &versioned);
    serde_json::from_str::<Record>(RECORD).expect("the seed record is valid");
    write(dir, "redis_codec", "record", Some(2), RECORD.as_bytes());
    let task = Wire::Task { id: 1, from: "n1".into(), name: "t".into(), payload: vec![9], reply: true };
    let reply = Wire::Reply { id: 1, member: "n2".into(), ok: false, body: b"failed".to_vec() };
    write(dir, "redis_codec", "task", Some(3), &postcard::to_allocvec(&task).expect("encodes"));
    write(dir, "redis_codec", "reply", Some(3), &postcard::to_allocvec(&reply).expect("encodes"));
}
