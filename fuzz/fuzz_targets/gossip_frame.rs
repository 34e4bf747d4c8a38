//! The gossip data plane after the length-delimited framing: a frame is
//! opened with the cluster key (`Sealer::open`), postcard-decoded into a
//! `wire::Msg`, and its data applied as the member's request handler does
//! (store writes, the hybrid logical clock, state pages).
//!
//! First byte picks the mode: even, the rest is a frame as received (it must
//! open with the fixed key `GOSSIP_KEY`, so mutations mostly test refusal);
//! odd, the rest is the plain message of a member holding the key (sealed
//! here, then opened), which is what reaches the decoder.
#![no_main]

use std::sync::LazyLock;

use clusterhost_fuzz::{GOSSIP_CLUSTER, GOSSIP_KEY};
use clusterhost_plugin_api::cluster::CacheBounds;
use gossip::crypto::Sealer;
use gossip::store::{chunks, Hlc, Store, Version, WireEntry};
use gossip::wire::Msg;
use libfuzzer_sys::fuzz_target;

static SEALER: LazyLock<Sealer> = LazyLock::new(|| Sealer::with_key(&GOSSIP_KEY, GOSSIP_CLUSTER));

/// The most a page may ask for here (the member caps it at [limits] state_page_bytes).
const PAGE_CAP: usize = 1 << 20;

fn held() -> Store {
    let store = Store::default();
    for (cache, key) in [("a", &b"1"[..]), ("a", b"2"), ("b", b""), ("b", b"\xff")] {
        store.apply(WireEntry {
            cache: cache.into(),
            key: key.to_vec(),
            value: Some(b"v".to_vec()),
            version: Version::at_ms(1_700_000_000_000, 7),
            deadline: 0,
        });
    }
    store
}

fn apply(entries: Vec<WireEntry>) {
    let (store, hlc) = (held(), Hlc::default());
    if let Some(max) = entries.iter().map(|e| e.version.hlc).max() {
        hlc.observe(max);
    }
    store.apply_all(entries.clone());
    // The same writes into bounded caches: the bounds hold whatever arrives.
    let bounded = Store::default();
    let bounds = CacheBounds { max_entries: 2, max_bytes: 4096, ttl_ms: 1000, max_idle_ms: 0 };
    for cache in entries.iter().map(|e| e.cache.as_str()) {
        bounded.configure(cache, bounds);
    }
    bounded.apply_all(entries.clone());
    bounded.sweep(u64::MAX);
    for cache in entries.iter().map(|e| e.cache.as_str()) {
        assert!(bounded.size(cache).entries <= 2, "a bounded cache holds at most its bound");
    }
    let _ = hlc.now();
    let _ = store.snapshot();
    let (page, _) = store.page(None, PAGE_CAP);
    assert!(!page.is_empty(), "a store holding entries gives a non-empty first page");
    let total = entries.len();
    let split: usize = chunks(entries, 4096).iter().map(Vec::len).sum();
    assert_eq!(split, total, "chunks keep every entry");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let plain = if mode % 2 == 0 {
        match SEALER.open(rest) {
            Some(plain) => plain,
            None => return,
        }
    } else {
        SEALER.open(&SEALER.seal(rest)).expect("a frame this sealer sealed opens")
    };
    let Ok(msg) = postcard::from_bytes::<Msg>(&plain) else { return };
    let _ = msg.reply_to();
    match msg {
        Msg::Replicate { entries, .. }
        | Msg::State { entries, .. }
        | Msg::StatePage { entries, .. }
        | Msg::TimedReplicate { entries, .. }
        | Msg::TimedStatePage { entries, .. } => apply(entries),
        Msg::StatePageRequest { after, max_bytes, .. } => {
            let max = usize::try_from(max_bytes).unwrap_or(usize::MAX).min(PAGE_CAP);
            let (page, more) = held().page(after.as_ref(), max);
            assert!(!more || !page.is_empty(), "more pages follow only a non-empty one");
        }
        _ => {}
    }
});
